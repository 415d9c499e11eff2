"""How vipann's entry points (the ``vipann`` command, the ``finetune/*.py`` recipe scripts) end.

:func:`run_entry_point` runs a command and turns the library's own errors into one line on stderr,
``PROG: error: MESSAGE``, with exit status 2: an error raised by vipann code (a bad argument, a
missing or corrupt file, a refused setting), or an error of the environment (:class:`OSError`: a
missing file, no permission, a full disk; memory exhausted). Anything else is a bug and keeps its
traceback. With the environment variable ``VIPANN_DEBUG=1`` every error keeps its traceback.

Also: warnings are printed as ``PROG: warning: MESSAGE`` lines; Ctrl-C ends with ``PROG:
interrupted`` and status 130; a closed pipe (``vipann list --json | head``) ends quietly with status
141, as ``SIGPIPE`` would.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from types import TracebackType

__all__ = ["DEBUG_VARIABLE", "debug_enabled", "is_library_error", "run_entry_point"]

#: Set to 1 to see the traceback of every error.
DEBUG_VARIABLE = "VIPANN_DEBUG"


def debug_enabled() -> bool:
    """True when ``VIPANN_DEBUG`` is set to something other than empty, 0, false or no."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no", "off")


def _raised_in_vipann(tb: TracebackType | None) -> bool:
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    module = last.tb_frame.f_globals.get("__name__", "")
    return module == "vipann" or module.startswith("vipann.")


def is_library_error(exc: BaseException) -> bool:
    """Whether an exception is a clear error to report in one line (not a bug to show with a traceback).

    Args:
        exc: The exception.

    Returns:
        True for environment errors (:class:`OSError`, :class:`MemoryError`, out of GPU memory) and
        for exceptions raised by vipann's own code, except assertion failures (bugs).
    """
    if isinstance(exc, (OSError, MemoryError)) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, AssertionError) or not isinstance(exc, Exception):
        return False
    return _raised_in_vipann(exc.__traceback__)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def run_entry_point(prog: str, command: Callable[[], int | None]) -> int:
    """Run a command-line entry point with vipann's error reporting.

    Args:
        prog: The program's name in messages (``"vipann predict"``, ``"finetune.py"``).
        command: The command; its return value is the exit status (None: 0).

    Returns:
        The exit status: the command's, 2 after a reported error, 130 after Ctrl-C, 141 after a
        closed pipe.

    Raises:
        Exception: Errors that are not the library's own (bugs), and every error when
            ``VIPANN_DEBUG=1``.
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    debug = debug_enabled()
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = show
            status = int(command() or 0)
            sys.stdout.flush()
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not is_library_error(exc):
            raise
        print(f"{prog}: error: {_message(exc)}", file=sys.stderr)
        return 2
