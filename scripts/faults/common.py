"""Shared helpers of the fault catalogue (scripts/fault_catalogue.py): categories, cases, observers, fixtures."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import vipann
from vipann.cli.main import main as vipann_main
from vipann.utils.entry import is_library_error

CLEAR = "clear error"
CORRECT = "correct behaviour"
UNCLEAR = "unclear error"
TRACEBACK = "raw traceback"
SILENT = "silent wrong"
LOSS = "data loss"
HANG = "hang"
SKIPPED = "skipped"
CATEGORIES = (CLEAR, CORRECT, UNCLEAR, TRACEBACK, SILENT, LOSS, HANG)

REPO = Path(__file__).resolve().parents[2]
FINETUNE = REPO / "finetune"
SR = 16000


@dataclass
class Outcome:
    """What a case observed: a category and a short detail."""

    category: str
    detail: str = ""


@dataclass
class Case:
    """One bad input or fault: its name, group, expected category, description and runner."""

    name: str
    group: str
    expected: str
    description: str
    run: Callable[[Path], Outcome]
    outcome: Outcome | None = None
    seconds: float = 0.0


CASES: list[Case] = []


def case(group: str, expected: str, description: str):
    """Register a case: ``run(workdir) -> Outcome``."""

    def register(fn: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
        CASES.append(Case(fn.__name__.lstrip("_").replace("_", "-"), group, expected, description, fn))
        return fn

    return register


# -- observing ------------------------------------------------------------------------------------
def first_line(text: str, limit: int = 110) -> str:
    """``text`` on one line, shortened to ``limit`` characters."""
    line = " ".join(str(text).strip().split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _judge_exception(exc: BaseException, pattern: str) -> Outcome:
    message = str(exc)
    if not is_library_error(exc):
        return Outcome(TRACEBACK, f"{type(exc).__name__}: {first_line(message)}")
    if re.search(pattern, message, re.S):
        return Outcome(CLEAR, first_line(message))
    return Outcome(UNCLEAR, f"{type(exc).__name__}: {first_line(message)}")


def api_error(fn: Callable[[], object], pattern: str) -> Outcome:
    """An API call that must be refused with a message matching ``pattern``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except Exception as exc:
        return _judge_exception(exc, pattern)
    return Outcome(SILENT, "accepted without an error")


def api_ok(fn: Callable[[], object], check: Callable[[object], str | None]) -> Outcome:
    """An API call that must succeed; ``check(result)`` returns None when right, else what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except Exception as exc:
        outcome = _judge_exception(exc, r"$^")
        return Outcome(TRACEBACK if outcome.category == TRACEBACK else UNCLEAR, outcome.detail)
    problem = check(result)
    return Outcome(CORRECT, "as expected") if problem is None else Outcome(SILENT, problem)


def cli(*argv: str) -> tuple[int | None, str, str, str | None]:
    """Run ``vipann ARGV`` in this process: ``(status, stdout, stderr, escaped traceback or None)``."""
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    status: int | None = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = vipann_main([str(a) for a in argv])
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            escaped = traceback.format_exc()
    return status, out.getvalue(), err.getvalue(), escaped


def cli_error(argv: list[str], pattern: str) -> Outcome:
    """A command that must fail with one error line matching ``pattern``."""
    status, _, err, escaped = cli(*argv)
    return judge_process(status, err, pattern, escaped)


def judge_process(status: int | None, err: str, pattern: str, escaped: str | None = None) -> Outcome:
    """Classify a finished command that had to fail with an error matching ``pattern``."""
    if escaped is not None or "Traceback (most recent call last)" in err:
        last = (escaped or err).strip().splitlines()[-1]
        return Outcome(TRACEBACK, first_line(last))
    if status == 0:
        return Outcome(SILENT, "exit status 0")
    lines = [line for line in err.strip().splitlines() if "error:" in line or "usage:" not in line]
    message = lines[-1] if lines else err.strip()
    if re.search(pattern, err, re.S):
        return Outcome(CLEAR, first_line(message))
    return Outcome(UNCLEAR, first_line(message))


def python(code: str, *args: str, timeout: float = 240, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run Python code in a fresh interpreter: ``(status, stdout, stderr)``; status None on a timeout."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "VIPANN_DEBUG": "0", **(env or {})},
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        return None, "", ""
    return result.returncode, result.stdout, result.stderr


def script(name: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 240):
    """Run ``finetune/NAME`` with ``args``: ``(status, stdout, stderr)``."""
    try:
        result = subprocess.run(
            [sys.executable, str(FINETUNE / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "VIPANN_DEBUG": "0", **(env or {})},
        )
    except subprocess.TimeoutExpired:
        return None, "", ""
    return result.returncode, result.stdout, result.stderr


def intact(files: dict[Path, str]) -> str | None:
    """None when every file still holds its content, else which are gone or changed."""
    lost = [str(p) for p, text in files.items() if not p.is_file() or p.read_text() != text]
    return None if not lost else f"lost or changed: {', '.join(lost)}"


def guarded(outcome: Outcome, files: dict[Path, str]) -> Outcome:
    """``outcome``, unless some of ``files`` were lost: then data loss."""
    lost = intact(files)
    return Outcome(LOSS, lost) if lost else outcome


# -- fixtures -------------------------------------------------------------------------------------
def project(path: Path) -> dict[Path, str]:
    """A user's folder that must survive: a thesis and a data file."""
    (path / "data").mkdir(parents=True, exist_ok=True)
    files = {path / "thesis.tex": "\\documentclass{article}\n", path / "data" / "a.csv": "x\n1\n"}
    for p, text in files.items():
        p.write_text(text)
    return files


def tiny(method: str = "det", seed: int = 0, **kwargs) -> vipann.PANN:
    """A seeded ``METHOD-tiny`` model in eval mode."""
    torch.manual_seed(seed)
    return vipann.create_model(f"{method}-tiny", **kwargs).eval()


def saved_model(work: Path, name: str = "m", method: str = "det", seed: int = 0) -> Path:
    """A model directory of a seeded tiny model."""
    return vipann.save_pretrained(tiny(method, seed), work / name)


def wav(path: Path, seconds: float = 1.0, seed: int = 0, subtype: str = "PCM_16") -> Path:
    """A 16 kHz WAV of quiet noise."""
    data = 0.1 * np.random.default_rng(seed).standard_normal(round(seconds * SR)).astype(np.float32)
    sf.write(path, data, SR, subtype=subtype)
    return path


def edit_config(directory: Path, **changes) -> None:
    """Edit a model's config.json by hand (no new seal), as a user or a flipped bit would."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config, indent=2))


def esc50(root: Path) -> Path:
    """A miniature ESC-50-master (classes 0 and 1, folds 1 and 2, 2 clips each, 0.5 s at 44.1 kHz)."""
    from vipann.datasets.labels import get_labels

    top = root / "ESC-50-master"
    if (top / "meta" / "esc50.csv").is_file():
        return top
    names = get_labels("esc50")
    rows = []
    rng = np.random.default_rng(0)
    (top / "audio").mkdir(parents=True)
    (top / "meta").mkdir(parents=True)
    for target in (0, 1):
        for fold in (1, 2):
            src = int(rng.integers(10_000, 999_999))
            for take in "AB":
                filename = f"{fold}-{src}-{take}-{target}.wav"
                t = np.arange(22050) / 44100
                tone = 0.4 * np.sin(2 * np.pi * (200 + 150 * target) * t) + rng.uniform(-0.05, 0.05, t.size)
                sf.write(top / "audio" / filename, tone.astype(np.float32), 44100, subtype="PCM_16")
                rows.append([filename, fold, target, names[target], "True", src, take])
    with open(top / "meta" / "esc50.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(sorted(rows))
    return top


def transfer_config(data: Path, out: Path, **kwargs):
    """A small transfer run (det-tiny, one fold, the fixed stage) on the miniature ESC-50."""
    from vipann.recipes.transfer import TransferConfig

    base = dict(
        dataset="esc50",
        data_root=str(data),
        out=str(out),
        model="det-tiny",
        strategies=["det"],
        stages=["fixed"],
        folds=[1],
        clip_seconds=0.5,
        fixed_epochs=2,
        finetune_epochs=0,
        batch_size=4,
        num_samples=1,
        replications=1,
        feature_draws=1,
        progress=False,
        plots=False,
        device="cpu",
    )
    base.update(kwargs)
    return TransferConfig(**base)


def quiet_transfer(config):
    """Run the transfer recipe with vipann's logging turned down."""
    import logging

    from vipann.recipes.transfer import run_transfer

    logging.getLogger("vipann").setLevel(logging.ERROR)
    return run_transfer(config)
