"""Helpers that every layer may use and that import nothing else of vipann.

* :mod:`vipann.utils.atomic`: files written through a temporary file and a rename, so that a reader
  sees the old content or the new one, never half of it.
* :mod:`vipann.utils.aliases`: old module paths (before the package was layered) that still import,
  with a :class:`FutureWarning` naming the new path.
* :mod:`vipann.utils.dirswap`: a whole directory replaced atomically (staging directory + two
  renames), and what a killed replacement left finished, rolled back or cleaned up.
* :mod:`vipann.utils.outdirs`: output folders that are never someone else's (a marker file; refusals
  that name the files that would be lost).
* :mod:`vipann.utils.integrity`: checksums of files, self-sealed JSON and tensors.
* :mod:`vipann.utils.entry`: how the command-line entry points report errors (one line; tracebacks
  with ``VIPANN_DEBUG=1``).
* :mod:`vipann.utils.devices`: a device checked before anything is moved there.
"""

from vipann.utils.atomic import fsync_path, write_csv_atomic, write_json_atomic, write_text_atomic

__all__ = ["fsync_path", "write_csv_atomic", "write_json_atomic", "write_text_atomic"]
