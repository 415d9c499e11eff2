"""Helpers that every layer may use and that import nothing else of vipann.

* :mod:`vipann.utils.atomic`: files written through a temporary file and a rename, so that a reader
  sees the old content or the new one, never half of it.
* :mod:`vipann.utils.aliases`: old module paths (before the package was layered) that still import,
  with a :class:`FutureWarning` naming the new path.
"""

from vipann.utils.atomic import fsync_path, write_csv_atomic, write_json_atomic, write_text_atomic

__all__ = ["fsync_path", "write_csv_atomic", "write_json_atomic", "write_text_atomic"]
