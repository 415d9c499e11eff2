"""Training checkpoints are checksummed: a flipped bit stops a resume instead of silently changing the run."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

import vipann
from vipann.train import FitConfig, fit, iterate_tensors
from vipann.train.state import load_state, load_weights, save_state, save_weights


def _state():
    torch.manual_seed(0)
    return {"model": {"w": torch.randn(64, 64), "b": torch.zeros(64)}, "step": 7, "history": [{"loss": 0.5}]}


def _flip_bit(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40  # inside the tensor data: the file still parses
    path.write_bytes(bytes(data))


def test_round_trip(tmp_path):
    save_state(tmp_path / "ckpt", _state())
    state = load_state(tmp_path / "ckpt")
    assert state["step"] == 7 and torch.equal(state["model"]["w"], _state()["model"]["w"])


def test_a_flipped_bit_in_the_tensors_is_refused(tmp_path):
    save_state(tmp_path / "ckpt", _state())
    _flip_bit(tmp_path / "ckpt" / "state.safetensors")
    with pytest.raises(ValueError, match=r"state\.safetensors has SHA-256 .* but state\.json records"):
        load_state(tmp_path / "ckpt")


def test_an_edited_structure_is_refused(tmp_path):
    save_state(tmp_path / "ckpt", _state())
    path = tmp_path / "ckpt" / "state.json"
    record = json.loads(path.read_text())
    record["structure"]["step"] = 70
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="modified or corrupted"):
        load_state(tmp_path / "ckpt")


def test_checkpoints_of_an_earlier_vipann_load_with_a_warning(tmp_path, caplog):
    save_state(tmp_path / "ckpt", _state())
    path = tmp_path / "ckpt" / "state.json"
    path.write_text(json.dumps(json.loads(path.read_text())["structure"]))  # the format-1 layout
    with caplog.at_level(logging.WARNING, logger="vipann.train.state"):
        assert load_state(tmp_path / "ckpt")["step"] == 7
    assert "no checksums" in caplog.text


def test_weights_files_carry_their_checksum(tmp_path):
    path = save_weights(tmp_path / "model.safetensors", _state()["model"])
    assert torch.equal(load_weights(path)["w"], _state()["model"]["w"])
    _flip_bit(path)
    with pytest.raises(ValueError, match="does not match the checksum of its tensors"):
        load_weights(path)


def test_a_resumed_fit_refuses_a_corrupted_checkpoint(tmp_path):
    x = torch.randn(24, 16, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()

    def run(resume):
        torch.manual_seed(0)
        model = vipann.create_model("det-tiny", num_classes=2)
        return fit(
            model,
            model.parameters(),
            iterate_tensors(x, y, 8, seed=0),
            FitConfig(epochs=2 if not resume else 4, lr=1e-2, seed=0),
            multilabel=False,
            num_train=len(x),
            forward=lambda m, inp: m.run_stages(inp, len(m.trunk_names)),
            checkpoint_dir=tmp_path / "ckpt",
            resume=resume,
            progress=False,
        )

    run(resume=False)
    _flip_bit(tmp_path / "ckpt" / "state.safetensors", 5000)
    with pytest.raises(ValueError, match="checkpoint is damaged"):
        run(resume=True)


def test_a_killed_checkpoint_swap_is_repaired_on_load(tmp_path):
    save_state(tmp_path / "ckpt", _state())
    code = textwrap.dedent(
        f"""
        import os, torch
        from vipann.train.state import save_state
        real = os.rename
        def rename(a, b):
            real(a, b)
            os._exit(9)  # killed between the two renames
        os.rename = rename
        save_state({str(tmp_path / "ckpt")!r}, {{"step": 8, "t": torch.ones(3)}})
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not (tmp_path / "ckpt").exists()
    assert load_state(tmp_path / "ckpt")["step"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
