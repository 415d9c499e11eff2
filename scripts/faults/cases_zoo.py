"""Fault cases: model directories (save, overwrite, interrupted saves, integrity) and original checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import vipann
from vipann.utils.integrity import seal_json, sha256_file
from vipann.zoo import serialization

from .common import (
    CLEAR,
    CORRECT,
    Outcome,
    api_error,
    api_ok,
    case,
    cli,
    cli_error,
    edit_config,
    guarded,
    judge_process,
    project,
    python,
    saved_model,
    tiny,
)

G = "zoo"


def _same(model, seed: int, method: str = "det") -> str | None:
    ref = tiny(method, seed)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    return None if same else "the weights are not those of the model saved"


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# -- overwriting -----------------------------------------------------------------------------------
@case(G, CLEAR, "save_pretrained(overwrite=True) into a project folder (thesis.tex, data/a.csv)")
def _save_overwrite_project_folder(work: Path) -> Outcome:
    files = project(work / "project")
    outcome = api_error(lambda: vipann.save_pretrained(tiny(), work / "project", overwrite=True), r"thesis\.tex")
    return guarded(outcome, files)


@case(G, CLEAR, "save_pretrained(overwrite=True) into a model directory holding the user's notes.txt")
def _save_overwrite_model_with_user_file(work: Path) -> Outcome:
    path = saved_model(work)
    (path / "notes.txt").write_text("mine")
    return guarded(
        api_error(lambda: vipann.save_pretrained(tiny(seed=1), path, overwrite=True), r"notes\.txt"),
        {path / "notes.txt": "mine"},
    )


@case(G, CORRECT, "save_pretrained(overwrite=True) over a vipann model directory replaces it")
def _save_overwrite_model_dir(work: Path) -> Outcome:
    path = saved_model(work)
    vipann.save_pretrained(tiny(seed=1), path, overwrite=True)
    return api_ok(lambda: vipann.load_pretrained_dir(path), lambda m: _same(m, 1))


@case(G, CLEAR, "save_pretrained into a non-empty directory without overwrite")
def _save_into_non_empty_without_overwrite(work: Path) -> Outcome:
    path = saved_model(work)
    return api_error(lambda: vipann.save_pretrained(tiny(seed=1), path), "not empty; pass overwrite=True")


@case(G, CLEAR, "save_pretrained onto an existing file")
def _save_onto_a_file(work: Path) -> Outcome:
    (work / "f").write_text("x")
    return guarded(api_error(lambda: vipann.save_pretrained(tiny(), work / "f"), "not a directory"), {work / "f": "x"})


@case(G, CLEAR, "vipann convert --overwrite into a project folder")
def _convert_overwrite_project_folder(work: Path) -> Outcome:
    files = project(work / "project")
    torch.save({"model": tiny().state_dict()}, work / "model.pth")
    outcome = cli_error(
        ["convert", "vipann", work / "model.pth", "--name", "det-tiny", "--out", work / "project", "--overwrite"],
        r"thesis\.tex",
    )
    return guarded(outcome, files)


@case(G, CLEAR, "vipann convert --out . --overwrite inside a model directory")
def _convert_out_dot_overwrite(work: Path) -> Outcome:
    torch.save({"model": tiny().state_dict()}, work / "model.pth")
    path = saved_model(work)
    os.chdir(path)
    return cli_error(
        ["convert", "vipann", work / "model.pth", "--name", "det-tiny", "--out", ".", "--overwrite"],
        "current working directory",
    )


@case(G, CLEAR, "vipann convert --out . --overwrite inside a project folder")
def _convert_out_dot_overwrite_in_project(work: Path) -> Outcome:
    files = project(work / "project")
    torch.save({"model": tiny().state_dict()}, work / "model.pth")
    os.chdir(work / "project")
    outcome = cli_error(
        ["convert", "vipann", work / "model.pth", "--name", "det-tiny", "--out", ".", "--overwrite"], r"thesis\.tex"
    )
    return guarded(outcome, files)


@case(G, CLEAR, "vipann convert of a checkpoint that is not there names where it is published")
def _convert_missing_checkpoint(work: Path) -> Outcome:
    return cli_error(["convert", "auto", work / "missing.pth"], r"does not exist.*Zenodo record 3987831.*VI-PANN")


@case(G, CLEAR, "vipann convert of a missing Cnn14_mAP=0.431.pth gives its download URL")
def _convert_missing_release_file(work: Path) -> Outcome:
    return cli_error(
        ["convert", "auto", work / "Cnn14_mAP=0.431.pth"], r"zenodo\.org/records/3987831/files/Cnn14.*det-cnn14"
    )


def _full_disk_save_file(state, filename, metadata=None):
    """What safetensors does when the disk fills up: part of the file, then this error (as on a full tmpfs)."""
    with open(filename, "wb") as fh:
        fh.write(b"\0" * 100)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _disk_full(work: Path, argv: list[str]) -> tuple:
    real = serialization.save_file
    serialization.save_file = _full_disk_save_file
    try:
        return cli(*argv)
    finally:
        serialization.save_file = real


@case(G, CLEAR, "vipann convert on a full disk (ENOSPC from the weights writer)")
def _convert_disk_full(work: Path) -> Outcome:
    torch.save({"model": tiny().state_dict()}, work / "model.pth")
    status, _, err, _ = _disk_full(
        work, ["convert", "vipann", str(work / "model.pth"), "--name", "det-tiny", "--out", str(work / "out")]
    )
    outcome = judge_process(status, err, r"No space left on device; free some space")
    if outcome.category == CLEAR and ((work / "out").exists() or _leftovers(work, "out")):
        return Outcome("silent wrong", "a partial output was left behind")
    return outcome


@case(G, CLEAR, "save_pretrained(overwrite=True) on a full disk keeps the old model")
def _save_disk_full_keeps_old(work: Path) -> Outcome:
    path = saved_model(work)
    real = serialization.save_file
    serialization.save_file = _full_disk_save_file
    try:
        outcome = api_error(lambda: vipann.save_pretrained(tiny(seed=1), path, overwrite=True), "No space left")
    finally:
        serialization.save_file = real
    if outcome.category == CLEAR and _same(vipann.load_pretrained_dir(path), 0) is not None:
        return Outcome("data loss", "the previous model was damaged")
    return outcome


# -- interrupted saves (real kills) ----------------------------------------------------------------
_KILLED = textwrap.dedent(
    """
    import os, sys, torch, vipann
    from vipann.zoo import serialization
    target, when = sys.argv[1], sys.argv[2]
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if when == "between-renames":
            os._exit(9)
    def save_file(state, path, metadata=None):
        open(path, "wb").write(b"\\0" * 1000)
        os._exit(9)
    os.rename = rename
    if when == "writing":
        serialization.save_file = save_file
    torch.manual_seed(1)
    serialization.save_pretrained(vipann.create_model("det-tiny").eval(), target, overwrite=True)
    """
)


def _kill_a_save(work: Path, when: str) -> Path:
    path = saved_model(work)
    status, _, err = python(_KILLED, str(path), when)
    if status != 9:
        raise RuntimeError(f"the save was not killed as planned (status {status}): {err[-300:]}")
    return path


@case(G, CORRECT, "a save killed between its two renames, then loaded: the swap is finished")
def _killed_between_renames_then_load(work: Path) -> Outcome:
    path = _kill_a_save(work, "between-renames")
    outcome = api_ok(lambda: vipann.load_pretrained_dir(path), lambda m: _same(m, 1))
    if outcome.category == CORRECT and _leftovers(work, "m"):
        return Outcome("silent wrong", f"leftovers remain: {_leftovers(work, 'm')}")
    return outcome


@case(G, CORRECT, "a save killed between its two renames, then from_pretrained('local-dir:...')")
def _killed_between_renames_then_from_pretrained(work: Path) -> Outcome:
    path = _kill_a_save(work, "between-renames")
    return api_ok(lambda: vipann.from_pretrained(f"local-dir:{path}"), lambda m: _same(m, 1))


@case(G, CORRECT, "a save killed between its two renames, then saved again")
def _killed_between_renames_then_save(work: Path) -> Outcome:
    path = _kill_a_save(work, "between-renames")
    vipann.save_pretrained(tiny(seed=2), path, overwrite=True)
    outcome = api_ok(lambda: vipann.load_pretrained_dir(path), lambda m: _same(m, 2))
    return outcome if not _leftovers(work, "m") else Outcome("silent wrong", "leftovers remain")


@case(G, CORRECT, "a save killed while writing: old model intact, leftover removed by the next save")
def _killed_while_writing(work: Path) -> Outcome:
    path = _kill_a_save(work, "writing")
    if not _leftovers(work, "m"):
        return Outcome("silent wrong", "no staging directory was left to clean: the kill did not happen")
    if _same(vipann.load_pretrained_dir(path), 0) is not None:
        return Outcome("data loss", "the old model changed")
    vipann.save_pretrained(tiny(seed=2), path, overwrite=True)
    return Outcome(CORRECT, "cleaned") if not _leftovers(work, "m") else Outcome("silent wrong", "leftover kept")


@case(G, CORRECT, "a concurrent save's staging directory (live process) is left alone")
def _live_writer_leftover_kept(work: Path) -> Outcome:
    import subprocess
    import sys

    from vipann.utils import dirswap

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = work / f".m.tmp-{dirswap._HOST}-{sleeper.pid}-{dirswap._start_time(sleeper.pid)}-0abc"
        live.mkdir()
        vipann.save_pretrained(tiny(), work / "m")
        return Outcome(CORRECT, "kept") if live.is_dir() else Outcome("data loss", "a live save's files were deleted")
    finally:
        sleeper.kill()
        sleeper.wait()


# -- integrity ---------------------------------------------------------------------------------------
def _edited(work: Path, change) -> Outcome:
    path = saved_model(work)
    edit_config(path, **change(json.loads((path / "config.json").read_text())))
    return api_error(lambda: vipann.from_pretrained(f"local-dir:{path}"), "modified or corrupted after it was written")


@case(G, CLEAR, "config.json with reversed labels")
def _config_reversed_labels(work: Path) -> Outcome:
    return _edited(work, lambda c: {"labels": c["labels"][::-1]})


@case(G, CLEAR, "config.json with the multilabel flag negated")
def _config_negated_multilabel(work: Path) -> Outcome:
    return _edited(work, lambda c: {"multilabel": not c["multilabel"]})


@case(G, CLEAR, "config.json with another sample rate (front end too)")
def _config_changed_sample_rate(work: Path) -> Outcome:
    return _edited(work, lambda c: {"sample_rate": 32000, "frontend": {**c["frontend"], "sample_rate": 32000}})


@case(G, CLEAR, "config.json with a temperature added")
def _config_added_temperature(work: Path) -> Outcome:
    return _edited(work, lambda c: {"temperature": 3.0})


@case(G, CLEAR, "config.json cut in half")
def _config_truncated(work: Path) -> Outcome:
    path = saved_model(work)
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])
    return api_error(lambda: vipann.load_pretrained_dir(path), "not valid JSON")


@case(G, CLEAR, "config.json without required fields")
def _config_missing_fields(work: Path) -> Outcome:
    path = saved_model(work)
    config = json.loads((path / "config.json").read_text())
    del config["arch"]
    (path / "config.json").write_text(json.dumps(config))
    return api_error(lambda: vipann.load_pretrained_dir(path), r"missing fields \['arch'\]")


@case(G, CLEAR, "one flipped bit in model.safetensors")
def _weights_bit_flip(work: Path) -> Outcome:
    path = saved_model(work)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-10] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))
    return api_error(lambda: vipann.load_pretrained_dir(path), "SHA-256")


@case(G, CLEAR, "model.safetensors truncated, checksum recomputed")
def _weights_truncated_checksum_fixed(work: Path) -> Outcome:
    path = saved_model(work)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    config = json.loads((path / "config.json").read_text())
    config["weights_sha256"] = sha256_file(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(seal_json(config, "config_sha256")))
    return api_error(lambda: vipann.load_pretrained_dir(path), "corrupt or truncated")


@case(G, CLEAR, "weights holding NaN, checksums recomputed")
def _weights_nan_checksum_fixed(work: Path) -> Outcome:
    path = saved_model(work)
    state = load_file(str(path / "model.safetensors"))
    state["fc1.weight"][0, 0] = float("nan")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["weights_sha256"] = sha256_file(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(seal_json(config, "config_sha256")))
    return api_error(lambda: vipann.load_pretrained_dir(path), r"NaN or infinite weights .*fc1\.weight")


@case(G, CLEAR, "a model directory without model.safetensors")
def _weights_missing(work: Path) -> Outcome:
    path = saved_model(work)
    (path / "model.safetensors").unlink()
    return api_error(lambda: vipann.load_pretrained_dir(path), "no model.safetensors")


@case(G, CLEAR, "a model directory without config.json")
def _config_missing(work: Path) -> Outcome:
    path = saved_model(work)
    (path / "config.json").unlink()
    return api_error(lambda: vipann.from_pretrained(f"local-dir:{path}"), "has no config.json")


@case(G, CLEAR, "from_pretrained of a directory that does not exist")
def _model_dir_missing(work: Path) -> Outcome:
    source = f"local-dir:{work / 'nowhere'}"
    return api_error(lambda: vipann.from_pretrained(source), "is not a directory|does not exist")


@case(G, CLEAR, "saving a model whose weights hold NaN")
def _save_nan_weights(work: Path) -> Outcome:
    model = tiny()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    return api_error(lambda: vipann.save_pretrained(model, work / "m"), "NaN or infinite weights")


def _modes(work: Path, umask: int) -> tuple[int, set[int]]:
    previous = os.umask(umask)
    try:
        path = vipann.save_pretrained(tiny(), work / f"m{umask:o}")
    finally:
        os.umask(previous)
    return os.stat(path).st_mode & 0o777, {os.stat(p).st_mode & 0o777 for p in path.iterdir()}


@case(G, CORRECT, "a model directory saved under umask 022 is 0755 with 0644 files")
def _umask_022(work: Path) -> Outcome:
    d, f = _modes(work, 0o022)
    ok = d == 0o755 and f == {0o644}
    return Outcome(CORRECT if ok else "silent wrong", f"dir {d:o}, files {sorted(f'{m:o}' for m in f)}")


@case(G, CORRECT, "a model directory saved under umask 077 is 0700 with 0600 files")
def _umask_077(work: Path) -> Outcome:
    d, f = _modes(work, 0o077)
    ok = d == 0o700 and f == {0o600}
    return Outcome(CORRECT if ok else "silent wrong", f"dir {d:o}, files {sorted(f'{m:o}' for m in f)}")


# -- original checkpoints -------------------------------------------------------------------------------
@case(G, CLEAR, "a malicious pickle (.pth whose unpickling runs a command)")
def _malicious_pickle(work: Path) -> Outcome:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {work / 'pwned'}",))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Evil()}, work / "evil.pth")
    outcome = api_error(lambda: vipann.zoo.checkpoint.read_torch_checkpoint(work / "evil.pth"), "weights_only=True")
    return outcome if not (work / "pwned").exists() else Outcome("data loss", "the pickle ran its command")


@case(G, CLEAR, "a .pth holding an infinite weight")
def _pth_with_inf(work: Path) -> Outcome:
    state = tiny().state_dict()
    state["fc_audioset.bias"][0] = float("inf")
    torch.save({"model": state}, work / "x.pth")
    return api_error(lambda: vipann.zoo.checkpoint.read_torch_checkpoint(work / "x.pth"), r"fc_audioset\.bias")


@case(G, CLEAR, "a .pth of random bytes")
def _pth_garbage(work: Path) -> Outcome:
    (work / "x.pth").write_bytes(os.urandom(2000))
    return cli_error(["convert", "auto", work / "x.pth"], "cannot read x.pth as a PyTorch checkpoint")


@case(G, CLEAR, "a .pth holding no state dict")
def _pth_no_state_dict(work: Path) -> Outcome:
    torch.save({"iteration": 3}, work / "x.pth")
    return cli_error(["convert", "auto", work / "x.pth"], "holds no state dict")


@case(G, CLEAR, "from_pretrained of an unknown name")
def _unknown_model_name(work: Path) -> Outcome:
    return api_error(lambda: vipann.from_pretrained("flip-resnet5"), "flip-resnet54")


@case(G, CLEAR, "load_pretrained_dir(num_classes=0)")
def _num_classes_zero(work: Path) -> Outcome:
    path = saved_model(work)
    return api_error(lambda: vipann.load_pretrained_dir(path, num_classes=0), "num_classes must be >= 1")


@case(G, CLEAR, "vipann card on a folder that is not a model directory")
def _card_on_project(work: Path) -> Outcome:
    project(work / "p")
    return cli_error(["card", work / "p", "--stdout"], "has no config.json")


@case(G, CLEAR, "vipann info of an unknown name")
def _info_unknown(work: Path) -> Outcome:
    return cli_error(["info", "flip-resnet5"], "flip-resnet54")


@case(G, CLEAR, "from_pretrained of a Hub model offline with an empty cache")
def _hub_offline_cold_cache(work: Path) -> Outcome:
    return api_error(lambda: vipann.from_pretrained("hf-hub:someone/not-cached"), r"(?i)offline|not in the cache|cache")


@case(G, CORRECT, "a model directory copied elsewhere still loads (no absolute paths inside)")
def _copied_model_dir(work: Path) -> Outcome:
    path = saved_model(work)
    shutil.copytree(path, work / "copy")
    return api_ok(lambda: vipann.from_pretrained(f"local-dir:{work / 'copy'}"), lambda m: _same(m, 0))
