"""Fault cases: the vipann command (predict, evaluate, retention, list, demo) under bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file

from .common import (
    CLEAR,
    CORRECT,
    SR,
    Outcome,
    case,
    cli,
    cli_error,
    esc50,
    first_line,
    guarded,
    project,
    python,
    wav,
)

G = "cli"


@case(G, CORRECT, "predict ok.wav missing.wav empty.wav other.wav --json: results, per-file errors, status 1")
def _predict_mixed_files(work: Path) -> Outcome:
    wav(work / "ok.wav")
    wav(work / "other.wav", seconds=1.5, seed=1)
    sf.write(work / "empty.wav", np.zeros(0, np.float32), SR)
    names = ["ok.wav", "missing.wav", "empty.wav", "other.wav"]
    status, out, err, escaped = cli("predict", *(work / n for n in names), "-m", "det-demo", "--json")
    if escaped:
        return Outcome("raw traceback", escaped.strip().splitlines()[-1])
    try:
        rows = json.loads(out)
    except ValueError:
        return Outcome("silent wrong", f"stdout is not complete JSON: {first_line(out)!r}")
    got = [Path(r["file"]).name for r in rows]
    errors = [line for line in err.splitlines() if ": error: " in line]
    named = all(any(n in line for line in errors) for n in ("missing.wav", "empty.wav"))
    if got == ["ok.wav", "other.wav"] and status == 1 and named and len(errors) == 2:
        return Outcome(CORRECT, f"2 results, errors: {'; '.join(first_line(e, 50) for e in errors)}")
    return Outcome("silent wrong", f"results {got}, status {status}, errors {errors}")


@case(G, CLEAR, "predict -n 0")
def _predict_n_zero(work: Path) -> Outcome:
    return cli_error(["predict", wav(work / "a.wav"), "-m", "det-demo", "-n", "0"], "must be >= 1, got 0")


@case(G, CLEAR, "predict --top-k 0")
def _predict_top_k_zero(work: Path) -> Outcome:
    return cli_error(["predict", wav(work / "a.wav"), "-m", "det-demo", "--top-k", "0"], "must be >= 1, got 0")


@case(G, CLEAR, "predict --top-k -1")
def _predict_top_k_negative(work: Path) -> Outcome:
    return cli_error(["predict", wav(work / "a.wav"), "-m", "det-demo", "--top-k", "-1"], "must be >= 1, got -1")


@case(G, CLEAR, "predict --device cuda on a machine without CUDA")
def _predict_device_cuda(work: Path) -> Outcome:
    if torch.cuda.is_available():
        return Outcome("skipped", "this machine has CUDA")
    return cli_error(["predict", wav(work / "a.wav"), "-m", "det-demo", "--device", "cuda"], "CUDA is not available")


@case(G, CLEAR, "predict --device tpu7")
def _predict_device_unknown(work: Path) -> Outcome:
    return cli_error(["predict", wav(work / "a.wav"), "-m", "det-demo", "--device", "tpu7"], "invalid device 'tpu7'")


@case(G, CLEAR, "predict with a registry architecture that has no weights")
def _predict_weightless_model(work: Path) -> Outcome:
    return cli_error(["predict", wav(work / "a.wav"), "-m", "flip-tiny"], "has no trained weights")


def _predict_one(work: Path, path: Path, pattern: str) -> Outcome:
    status, out, err, escaped = cli("predict", path, "-m", "det-demo")
    if escaped:
        return Outcome("raw traceback", escaped.strip().splitlines()[-1])
    if status == 1 and path.name in err and __import__("re").search(pattern, err):
        return Outcome(CLEAR, first_line(err.strip().splitlines()[0]))
    return Outcome("unclear error" if status else "silent wrong", first_line(err or out))


@case(G, CLEAR, "predict on a text file named .wav")
def _predict_text_file(work: Path) -> Outcome:
    (work / "notes.wav").write_text("not audio")
    return _predict_one(work, work / "notes.wav", "cannot decode audio")


@case(G, CLEAR, "predict on a float WAV holding NaN")
def _predict_nan_wav(work: Path) -> Outcome:
    data = np.zeros(SR, np.float32)
    data[100] = np.nan
    sf.write(work / "nan.wav", data, SR, subtype="FLOAT")
    return _predict_one(work, work / "nan.wav", "NaN or infinite")


@case(G, CLEAR, "predict on a directory")
def _predict_directory(work: Path) -> Outcome:
    (work / "d.wav").mkdir()
    return _predict_one(work, work / "d.wav", "not a regular file")


def _truncated(work: Path, cut) -> Outcome:
    full = wav(work / "full.wav")
    data = full.read_bytes()
    (work / "cut.wav").write_bytes(cut(data))
    status, out, err, escaped = cli("predict", work / "cut.wav", "-m", "det-demo")
    if escaped:
        return Outcome("raw traceback", escaped.strip().splitlines()[-1])
    warned = [line for line in err.splitlines() if "warning:" in line and "declares 16000 frames" in line]
    if status == 0 and warned and "cut.wav" in out:
        return Outcome(CORRECT, first_line(warned[0]))
    return Outcome("silent wrong", f"status {status}, no warning naming the frame counts: {first_line(err)}")


@case(G, CORRECT, "predict on a WAV holding half its data chunk: a warning with both frame counts")
def _predict_half_wav(work: Path) -> Outcome:
    return _truncated(work, lambda data: data[: 44 + 16000])


@case(G, CORRECT, "predict on a valid WAV header followed by 1,000 random bytes: a warning")
def _predict_header_and_noise(work: Path) -> Outcome:
    return _truncated(work, lambda data: data[:44] + os.urandom(1000))


@case(G, CORRECT, "predict --csv with a missing file: complete CSV for the others, status 1")
def _predict_csv_partial(work: Path) -> Outcome:
    status, out, err, _ = cli("predict", wav(work / "a.wav"), work / "b.wav", "-m", "det-demo", "--csv", "--top-k", "2")
    lines = out.strip().splitlines()
    ok = status == 1 and len(lines) == 3 and lines[0].startswith("file,rank") and "b.wav" in err
    return Outcome(CORRECT if ok else "silent wrong", f"status {status}, {len(lines)} CSV lines")


@case(G, CLEAR, "retention on a file that is not safetensors")
def _retention_not_safetensors(work: Path) -> Outcome:
    (work / "p.safetensors").write_bytes(os.urandom(300))
    return cli_error(["retention", work / "p.safetensors", "--out", work / "r"], "is not a safetensors file")


@case(G, CLEAR, "retention on a missing file")
def _retention_missing(work: Path) -> Outcome:
    return cli_error(["retention", work / "nope.safetensors", "--out", work / "r"], "does not exist")


@case(G, CLEAR, "retention on a safetensors file without probs")
def _retention_without_probs(work: Path) -> Outcome:
    save_file({"x": torch.zeros(2)}, str(work / "p.safetensors"))
    return cli_error(["retention", work / "p.safetensors", "--out", work / "r"], "lacks 'probs' or 'targets'")


@case(G, CLEAR, "retention --out a project folder")
def _retention_out_project(work: Path) -> Outcome:
    files = project(work / "project")
    save_file({"probs": torch.full((1, 2, 4, 3), 1 / 3), "targets": torch.tensor([0, 1, 2, 0])}, str(work / "p.st"))
    return guarded(cli_error(["retention", work / "p.st", "--out", work / "project"], r"thesis\.tex"), files)


@case(G, CLEAR, "evaluate --out a project folder")
def _evaluate_out_project(work: Path) -> Outcome:
    import vipann

    files = project(work / "project")
    data = esc50(work)
    torch.manual_seed(0)
    model = vipann.save_pretrained(vipann.create_model("det-tiny", num_classes=50), work / "m50")
    argv = ["evaluate", "-m", f"local-dir:{model}", "--dataset", "esc50", "--data-root", data]
    argv += ["--clip-seconds", "0.5", "--out", work / "project"]
    return guarded(cli_error(argv, r"thesis\.tex"), files)


@case(G, CLEAR, "evaluate with an unknown dataset")
def _evaluate_unknown_dataset(work: Path) -> Outcome:
    argv = ["evaluate", "-m", "det-demo", "--dataset", "esc-50", "--data-root", work, "--out", work / "o"]
    return cli_error(argv, "esc50")


@case(G, CLEAR, "evaluate with a data root that does not exist")
def _evaluate_missing_root(work: Path) -> Outcome:
    argv = ["evaluate", "-m", "det-demo", "--dataset", "esc50", "--data-root", work / "x", "--out", work / "o"]
    return cli_error(argv, "not the dataset folder as distributed")


@case(G, CLEAR, "evaluate of a 20-class model on a 50-class dataset")
def _evaluate_class_mismatch(work: Path) -> Outcome:
    argv = ["evaluate", "-m", "det-demo", "--dataset", "esc50", "--data-root", esc50(work), "--out", work / "o"]
    return cli_error(argv, "has 50 classes but the model 20")


@case(G, CLEAR, "demo --out a project folder")
def _demo_out_project(work: Path) -> Outcome:
    files = project(work / "project")
    return guarded(cli_error(["demo", "--out", work / "project", "--quick"], r"thesis\.tex"), files)


@case(G, CLEAR, "compare --out a project folder")
def _compare_out_project(work: Path) -> Outcome:
    files = project(work / "project")
    return guarded(cli_error(["compare", "--out", work / "project", "--no-progress"], r"thesis\.tex"), files)


@case(G, CLEAR, "compare --config of malformed YAML")
def _compare_malformed_yaml(work: Path) -> Outcome:
    (work / "bad.yaml").write_text("lr: 0.1\nmethods: [base, focal\n")
    return cli_error(
        ["compare", "--config", work / "bad.yaml", "--out", work / "o"], r"bad\.yaml is not valid YAML at line"
    )


@case(G, CLEAR, "compare --config with an unknown setting")
def _compare_unknown_setting(work: Path) -> Outcome:
    (work / "c.yaml").write_text("learning_rate: 0.1\n")
    return cli_error(
        ["compare", "--config", work / "c.yaml", "--out", work / "o"], r"unknown settings \['learning_rate'\]"
    )


@case(G, CLEAR, "compare --methods base,bayes")
def _compare_unknown_method(work: Path) -> Outcome:
    return cli_error(["compare", "--methods", "base,bayes", "--out", work / "o"], r"unknown methods \['bayes'\]")


@case(G, CORRECT, "vipann list --json | head -1: no broken-pipe error")
def _list_into_head(work: Path) -> Outcome:
    code = "import sys; from vipann.cli.main import main; sys.exit(main(['list', '--json']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    if "Traceback" in err:
        return Outcome("raw traceback", err.strip().splitlines()[-1])
    return Outcome(CORRECT if err == "" else "unclear error", f"status {proc.returncode}, stderr {err.strip()!r}")


@case(G, CORRECT, "VIPANN_DEBUG=1 shows the traceback of an error")
def _debug_variable(work: Path) -> Outcome:
    code = "import sys; from vipann.cli.main import main; sys.exit(main(['convert', 'auto', 'missing.pth']))"
    status, _, err = python(code, env={"VIPANN_DEBUG": "1"}, cwd=work)
    ok = status not in (0, None) and "Traceback" in err and "FileNotFoundError" in err
    return Outcome(CORRECT if ok else "silent wrong", f"status {status}")


@case(G, CLEAR, "a command line error is one line without a traceback (subprocess)")
def _error_is_one_line(work: Path) -> Outcome:
    code = "import sys; from vipann.cli.main import main; sys.exit(main(['info', 'nonsense-model']))"
    status, _, err = python(code, cwd=work)
    lines = err.strip().splitlines()
    if "Traceback" in err:
        return Outcome("raw traceback", lines[-1])
    ok = status == 2 and len(lines) == 1 and lines[0].startswith("vipann info: error:")
    return Outcome(CLEAR if ok else "unclear error", first_line(err))
