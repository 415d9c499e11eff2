"""Interrupted directory swaps (real kills) are finished or rolled back; only dead writers' leftovers go."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import vipann
from vipann.utils import dirswap
from vipann.utils.dirswap import make_staging_dir, recover_dir, swap_into_place
from vipann.zoo.serialization import load_pretrained_dir, save_pretrained


def _leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _model(seed):
    torch.manual_seed(seed)
    return vipann.create_model("det-tiny").eval()


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _killed_save(target, when):
    """Save a det-tiny (seed 1) over ``target`` in another process that dies ``when`` (no clean-up runs)."""
    code = textwrap.dedent(
        f"""
        import os, torch, vipann
        from vipann.zoo import serialization
        real_rename = os.rename
        renames = []

        def rename(a, b):
            real_rename(a, b)
            renames.append(b)
            if {when!r} == "between-renames" and len(renames) == 1:
                os._exit(9)  # killed between the two renames of the swap

        def save_file(state, path, metadata=None):
            with open(path, "wb") as fh:
                fh.write(b"\\0" * 1000)
            os._exit(9)  # killed while writing the weights

        os.rename = rename
        if {when!r} == "writing":
            serialization.save_file = save_file
        torch.manual_seed(1)
        serialization.save_pretrained(vipann.create_model("det-tiny").eval(), {str(target)!r}, overwrite=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 9, result.stderr


def test_kill_between_the_renames_is_finished_by_the_next_load(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model(0), target)
    _killed_save(target, "between-renames")
    assert not target.exists()  # the state the issue describes: only hidden leftovers remain
    assert {n.split("-", 1)[0] for n in _leftovers(tmp_path, "m")} == {".m.old", ".m.tmp"}
    loaded = load_pretrained_dir(target)  # not "is not a directory": the swap is finished
    assert _same(loaded, _model(1))  # the new model was complete, so it wins
    assert _leftovers(tmp_path, "m") == []


def test_kill_between_the_renames_is_finished_by_from_pretrained(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model(0), target)
    _killed_save(target, "between-renames")
    assert _same(vipann.from_pretrained(f"local-dir:{target}"), _model(1))
    assert _leftovers(tmp_path, "m") == []


def test_kill_between_the_renames_without_staged_content_rolls_back(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model(0), target)
    _killed_save(target, "between-renames")
    (staged,) = [tmp_path / n for n in _leftovers(tmp_path, "m") if n.startswith(".m.tmp-")]
    import shutil

    shutil.rmtree(staged)
    assert recover_dir(target) is True
    assert _same(load_pretrained_dir(target), _model(0))
    assert _leftovers(tmp_path, "m") == []


def test_kill_between_the_renames_is_repaired_by_the_next_save(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model(0), target)
    _killed_save(target, "between-renames")
    save_pretrained(_model(2), target, overwrite=True)
    assert _same(load_pretrained_dir(target), _model(2))
    assert _leftovers(tmp_path, "m") == []


def test_leftover_of_a_save_killed_while_writing_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "m"
    save_pretrained(_model(0), target)
    _killed_save(target, "writing")
    (leftover,) = _leftovers(tmp_path, "m")
    assert leftover.startswith(".m.tmp-")
    assert _same(load_pretrained_dir(target), _model(0))  # the old model is untouched
    save_pretrained(_model(2), target, overwrite=True)
    assert _leftovers(tmp_path, "m") == []


def test_leftovers_of_live_writers_are_never_touched(tmp_path):
    # A concurrent save in another (live) process, and one in this process: both keep their staging dirs.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = f"{dirswap._HOST}-{sleeper.pid}-{dirswap._start_time(sleeper.pid)}-0abc"
        live_other = tmp_path / f".m.tmp-{token}"
        live_other.mkdir()
        (live_other / "model.safetensors").write_bytes(b"being written")
        mine = make_staging_dir(tmp_path / "m")
        save_pretrained(_model(0), tmp_path / "m")
        assert live_other.is_dir() and mine.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Once its writer is dead, the next save cleans it up.
    save_pretrained(_model(1), tmp_path / "m", overwrite=True)
    assert not live_other.exists() and mine.is_dir()  # this process is alive: its own stays


def test_a_reused_pid_does_not_keep_a_dead_writers_leftover(tmp_path):
    # Same pid as a live process, other start time: the writer is dead (pid reuse, e.g. in containers).
    token = f"{dirswap._HOST}-{os.getpid()}-1-0abc"
    leftover = tmp_path / f".m.tmp-{token}"
    leftover.mkdir()
    if dirswap._start_time(os.getpid()) == "0":
        pytest.skip("process start times are not available on this system")
    recover_dir(tmp_path / "m")
    assert not leftover.exists()


def test_unknown_writers_are_judged_by_age(tmp_path, monkeypatch):
    legacy = tmp_path / ".m.tmp-k3j4h5"  # an older vipann's name: no writer recorded
    legacy.mkdir()
    recover_dir(tmp_path / "m")
    assert legacy.exists()  # recent: it may still be written
    old = os.stat(legacy).st_mtime - dirswap.LEFTOVER_GRACE_S - 10
    os.utime(legacy, (old, old))
    recover_dir(tmp_path / "m")
    assert not legacy.exists()


def test_staging_and_swap_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        staging = make_staging_dir(tmp_path / "d")
        (staging / "f").write_text("x")
        swap_into_place(staging, tmp_path / "d")
        assert oct(os.stat(tmp_path / "d").st_mode & 0o777) == oct(0o755)
        os.umask(0o077)
        staging = make_staging_dir(tmp_path / "e")
        assert oct(os.stat(staging).st_mode & 0o777) == oct(0o700)
    finally:
        os.umask(previous)
