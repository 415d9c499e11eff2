"""Entry points: the library's errors in one line, bugs with their traceback, VIPANN_DEBUG, Ctrl-C, closed pipes."""

import subprocess
import sys
import warnings

import pytest

from vipann.utils.entry import is_library_error, run_entry_point
from vipann.zoo.registry import get_pretrained_cfg


def _library_error():
    get_pretrained_cfg("no-such-model")  # raised inside vipann


def test_library_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.delenv("VIPANN_DEBUG", raising=False)
    assert run_entry_point("prog", _library_error) == 2
    err = capsys.readouterr().err
    assert err.startswith("prog: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "no-such-model" in err


def test_environment_errors_are_one_line(capsys, tmp_path):
    def missing():
        open(tmp_path / "nope.txt")  # noqa: SIM115 (raised by Python, an OSError)

    assert run_entry_point("prog", missing) == 2
    err = capsys.readouterr().err
    assert "No such file or directory" in err and "nope.txt" in err


def test_bugs_keep_their_traceback():
    def bug():
        return {}["key"]  # a KeyError raised outside vipann: a bug, not a user error

    with pytest.raises(KeyError):
        run_entry_point("prog", bug)

    def failed_assert():
        raise AssertionError("invariant")

    with pytest.raises(AssertionError):
        run_entry_point("prog", failed_assert)
    assert not is_library_error(AssertionError("x"))


def test_debug_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("VIPANN_DEBUG", "1")
    with pytest.raises(ValueError, match="no-such-model"):
        run_entry_point("prog", _library_error)


def test_interrupt_and_warnings(capsys, monkeypatch):
    monkeypatch.delenv("VIPANN_DEBUG", raising=False)

    def interrupted():
        raise KeyboardInterrupt

    assert run_entry_point("prog", interrupted) == 130
    assert "prog: interrupted" in capsys.readouterr().err

    def warns():
        warnings.warn("the WAV header declares 16000 frames but the file holds 8000", stacklevel=1)
        return 0

    assert run_entry_point("prog", warns) == 0
    assert capsys.readouterr().err == "prog: warning: the WAV header declares 16000 frames but the file holds 8000\n"


def test_closed_pipe_ends_quietly():
    code = "import sys; from vipann.cli.main import main; sys.exit(main(['list', '--json']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the output is written, as `| head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Broken pipe" not in err and "Traceback" not in err and err == ""
    assert proc.returncode == 141
