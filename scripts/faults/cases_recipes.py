"""Fault cases: the recipes (resume, output folders, checkpoints) and the finetune/*.py scripts."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from vipann.train.state import load_state, save_state

from .common import (
    CLEAR,
    CORRECT,
    FINETUNE,
    HANG,
    Outcome,
    api_error,
    case,
    esc50,
    first_line,
    guarded,
    judge_process,
    project,
    quiet_transfer,
    script,
    transfer_config,
)

G = "recipes"


def _finished(work: Path) -> tuple[Path, Path]:
    data = esc50(work)
    out = work / "run"
    quiet_transfer(transfer_config(data, out))
    return data, out


@case(G, CLEAR, "--resume after changing fixed_epochs, lr and seed on a finished run")
def _resume_with_changed_settings(work: Path) -> Outcome:
    data, out = _finished(work)
    before = (out / "config.yaml").read_text()
    outcome = api_error(
        lambda: quiet_transfer(transfer_config(data, out, resume=True, fixed_epochs=50, lr=0.5, seed=999)),
        r"fixed_epochs: 2 in the run, 50 now.*lr: 0\.001 in the run, 0\.5 now.*seed: 0 in the run, 999 now",
    )
    if (out / "config.yaml").read_text() != before:
        return Outcome("silent wrong", "config.yaml was rewritten with the new settings next to the old results")
    return outcome


@case(G, CORRECT, "--resume with the same settings (other device and progress flags) skips finished stages")
def _resume_same_settings(work: Path) -> Outcome:
    data, out = _finished(work)
    weights = out / "det" / "fold1" / "fixed" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    results = quiet_transfer(transfer_config(data, out, resume=True, progress=True, device=""))
    ok = weights.stat().st_mtime_ns == stamp and len(results["det"]["fixed"]) == 1
    return Outcome(CORRECT if ok else "silent wrong", "skipped" if ok else "the finished stage was trained again")


@case(G, CLEAR, "running again into a finished run without --resume or --overwrite")
def _rerun_without_flag(work: Path) -> Outcome:
    data, out = _finished(work)
    return api_error(lambda: quiet_transfer(transfer_config(data, out, seed=5)), "--resume to continue it, --overwrite")


@case(G, CORRECT, "--overwrite on a finished run starts over")
def _overwrite_run(work: Path) -> Outcome:
    data, out = _finished(work)
    (out / "det" / "stale.txt").write_text("old")
    quiet_transfer(transfer_config(data, out, overwrite=True, seed=5))
    import yaml

    ok = not (out / "det" / "stale.txt").exists() and yaml.safe_load((out / "config.yaml").read_text())["seed"] == 5
    return Outcome(CORRECT if ok else "silent wrong", "started over" if ok else "old files mixed with the new run")


@case(G, CLEAR, "transfer --out a project folder (with --overwrite)")
def _transfer_out_project(work: Path) -> Outcome:
    files = project(work / "project")
    data = esc50(work)
    outcome = api_error(lambda: quiet_transfer(transfer_config(data, work / "project", overwrite=True)), r"thesis\.tex")
    return guarded(outcome, files)


@case(G, CLEAR, "--resume together with --overwrite")
def _resume_and_overwrite(work: Path) -> Outcome:
    return api_error(
        lambda: transfer_config(esc50(work), work / "o", resume=True, overwrite=True), "exclude each other"
    )


@case(G, CORRECT, "a run killed in its second stage and resumed equals an uninterrupted run")
def _killed_and_resumed(work: Path) -> Outcome:
    from vipann.recipes import _stages
    from vipann.train import engine

    data = esc50(work)
    kwargs = dict(stages=["fixed", "finetuned"], fixed_epochs=2, finetune_epochs=2)
    quiet_transfer(transfer_config(data, work / "full", **kwargs))
    original = engine.fit
    calls = {"n": 0}

    def dying_fit(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:

            def boom(result):
                if result.epoch == 1:
                    raise KeyboardInterrupt

            kw["on_epoch_end"] = boom
        return original(*args, **kw)

    _stages.fit = dying_fit
    try:
        quiet_transfer(transfer_config(data, work / "killed", **kwargs))
    except KeyboardInterrupt:
        pass
    finally:
        _stages.fit = original
    quiet_transfer(transfer_config(data, work / "killed", resume=True, **kwargs))
    a = load_file(str(work / "full" / "det" / "fold1" / "finetuned" / "model.safetensors"))
    b = load_file(str(work / "killed" / "det" / "fold1" / "finetuned" / "model.safetensors"))
    same = all(torch.allclose(a[k], b[k]) for k in a)
    return Outcome(CORRECT if same else "silent wrong", "identical weights" if same else "the resumed run differs")


@case(G, CLEAR, "a flipped bit in a training checkpoint (state.safetensors), then resumed")
def _checkpoint_bit_flip(work: Path) -> Outcome:
    save_state(work / "ckpt", {"model": {"w": torch.randn(64, 64)}, "epoch": 3})
    path = work / "ckpt" / "state.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x40
    path.write_bytes(bytes(data))
    return api_error(lambda: load_state(work / "ckpt"), "SHA-256 .* checkpoint is damaged")


@case(G, CLEAR, "a training checkpoint whose state.json was edited (epoch changed)")
def _checkpoint_edited(work: Path) -> Outcome:
    save_state(work / "ckpt", {"w": torch.zeros(3), "epoch": 3})
    path = work / "ckpt" / "state.json"
    record = json.loads(path.read_text())
    record["structure"]["epoch"] = 30
    path.write_text(json.dumps(record))
    return api_error(lambda: load_state(work / "ckpt"), "modified or corrupted")


@case(G, CLEAR, "a corrupted finished stage's weights, loaded by the next stage on resume")
def _stage_weights_bit_flip(work: Path) -> Outcome:
    import shutil

    data = esc50(work)
    kwargs = dict(stages=["fixed", "finetuned"], finetune_epochs=1)
    out = work / "run"
    quiet_transfer(transfer_config(data, out, **kwargs))
    weights = out / "det" / "fold1" / "fixed" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-40] ^= 0x08
    weights.write_bytes(bytes(raw))
    shutil.rmtree(out / "det" / "fold1" / "finetuned")
    return api_error(
        lambda: quiet_transfer(transfer_config(data, out, resume=True, **kwargs)), "checksum of its tensors"
    )


@case(G, CLEAR, "transfer on an ESC-50 copy whose CSV has only its header")
def _transfer_header_only(work: Path) -> Outcome:
    data = esc50(work)
    csv = data / "meta" / "esc50.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    return api_error(lambda: quiet_transfer(transfer_config(data, work / "o")), "lists no clips")


def _script_error(name: str, args: list[str], pattern: str, env: dict | None = None) -> Outcome:
    if not (FINETUNE / name).is_file():
        return Outcome("skipped", f"no {FINETUNE / name}")
    status, _, err = script(name, args, env=env)
    if status is None:
        return Outcome(HANG, "did not finish")
    return judge_process(status, err, pattern)


@case(G, CLEAR, "finetune.py with a data root that does not exist")
def _script_missing_data_root(work: Path) -> Outcome:
    args = ["--dataset", "esc50", "--data-root", str(work / "nowhere"), "--model", "det-tiny", "--out", str(work / "o")]
    return _script_error("finetune.py", args, r"finetune\.py: error: esc50: .*nowhere")


@case(G, CLEAR, "finetune.py --config of malformed YAML")
def _script_malformed_yaml(work: Path) -> Outcome:
    (work / "c.yaml").write_text("strategies: [flip\n")
    args = ["--config", str(work / "c.yaml"), "--data-root", "x", "--out", str(work / "o")]
    return _script_error("finetune.py", args, r"c\.yaml is not valid YAML at line")


@case(G, CLEAR, "finetune.py --config with an unknown setting")
def _script_unknown_setting(work: Path) -> Outcome:
    (work / "c.yaml").write_text("epochs: 5\n")
    args = ["--config", str(work / "c.yaml"), "--data-root", "x", "--out", str(work / "o")]
    return _script_error("finetune.py", args, r"unknown settings \['epochs'\]")


@case(G, CLEAR, "finetune.py --strategies bayes")
def _script_unknown_strategy(work: Path) -> Outcome:
    args = ["--strategies", "bayes", "--data-root", "x", "--out", str(work / "o")]
    return _script_error("finetune.py", args, r"unknown strategies \['bayes'\]")


@case(G, CLEAR, "finetune.py --device cuda on a machine without CUDA")
def _script_device_cuda(work: Path) -> Outcome:
    if torch.cuda.is_available():
        return Outcome("skipped", "this machine has CUDA")
    args = ["--data-root", str(esc50(work)), "--device", "cuda", "--out", str(work / "o")]
    return _script_error("finetune.py", args, "CUDA is not available")


@case(G, CLEAR, "finetune.py --out a project folder")
def _script_out_project(work: Path) -> Outcome:
    files = project(work / "project")
    args = ["--data-root", str(esc50(work)), "--model", "det-tiny", "--out", str(work / "project")]
    return guarded(_script_error("finetune.py", args, r"thesis\.tex"), files)


@case(G, CLEAR, "pretrain.py without --train")
def _pretrain_without_train(work: Path) -> Outcome:
    return _script_error("pretrain.py", ["--out", str(work / "o")], r"pretrain\.py: error: train is required")


@case(G, CLEAR, "pretrain.py --train of a folder without labels.csv")
def _pretrain_folder_without_labels(work: Path) -> Outcome:
    (work / "audio").mkdir()
    args = ["--train", str(work / "audio"), "--model", "det-tiny", "--out", str(work / "o"), "--no-progress"]
    return _script_error("pretrain.py", args, r"pretrain\.py: error: .*labels\.csv")


@case(G, CLEAR, "compare.py --dataset esc50 without --data-root")
def _compare_script_without_root(work: Path) -> Outcome:
    return _script_error("compare.py", ["--dataset", "esc50", "--out", str(work / "o")], "needs --data-root")


@case(G, CORRECT, "finetune.py error with VIPANN_DEBUG=1 shows the traceback")
def _script_debug(work: Path) -> Outcome:
    if not (FINETUNE / "finetune.py").is_file():
        return Outcome("skipped", "no finetune/")
    status, _, err = script(
        "finetune.py", ["--data-root", str(work / "x"), "--out", str(work / "o")], {"VIPANN_DEBUG": "1"}
    )
    ok = status not in (0, None) and "Traceback" in err
    return Outcome(CORRECT if ok else "silent wrong", first_line(err.strip().splitlines()[-1] if err else ""))
