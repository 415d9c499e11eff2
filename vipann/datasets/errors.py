"""The errors the dataset loaders raise, each naming the clip or file it is about."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["AudioReadError", "MetadataError", "MissingClipsError", "TruncatedAudioWarning"]

# How many offending names an error message spells out before it summarises the rest.
_MAX_LISTED = 20


class AudioReadError(OSError):
    """An audio file is missing, unreadable or holds no valid samples.

    Attributes:
        path: The file (``None`` when not known).
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        # One positional argument only: DataLoader workers re-create exceptions as ``cls(message)``.
        super().__init__(message)
        self.path = path


class TruncatedAudioWarning(UserWarning):
    """An audio file holds fewer samples than its header declares (cut off or damaged); what is there is used."""


class MissingClipsError(FileNotFoundError):
    """Clips listed in a dataset's metadata are missing or unreadable.

    Attributes:
        problems: ``(clip_id, reason)`` of every offending clip.
    """

    def __init__(self, dataset: str, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{dataset}: {len(self.problems)} clip(s) listed in the metadata cannot be used:\n"
            f"{format_problems(self.problems)}\n"
            "Restore the files, or pass on_error='skip' to leave these clips out (they are then logged and "
            "listed in the dataset's .skipped)."
        )

    def __reduce__(self):
        # The default reduce would call __init__(message), which takes other arguments.
        return (_rebuild_missing, (str(self), self.problems))


def _rebuild_missing(message: str, problems: list[tuple[str, str]]) -> MissingClipsError:
    error = MissingClipsError.__new__(MissingClipsError)
    FileNotFoundError.__init__(error, message)
    error.problems = problems
    return error


class MetadataError(ValueError):
    """A dataset's metadata does not match its documented format or its class list.

    Typical causes are pointing a loader at the wrong dataset, a truncated or edited CSV, or a
    label that is not one of the dataset's classes.
    """


def format_problems(problems: Sequence[tuple[str, str]]) -> str:
    """Format ``(name, reason)`` pairs as an indented list, summarising long lists.

    Args:
        problems: ``(name, reason)`` pairs.

    Returns:
        One line per problem (at most 20, then a count of the rest).
    """
    lines = [f"  {name}: {reason}" for name, reason in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    return "\n".join(lines)
