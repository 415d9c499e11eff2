"""Regenerate the README's generated blocks: the zoo table (registry) and the layer table (architecture).

Usage: python scripts/update_readme.py [--check]
"""

import re
import sys
from pathlib import Path

from vipann.utils.layering import markdown_table
from vipann.zoo.registry import zoo_table

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = {"zoo": zoo_table, "layers": markdown_table}


def render(text: str) -> str:
    """Return ``text`` with every generated block replaced by its current content."""
    for name, make in BLOCKS.items():
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = f"{start}\n{make()}\n{end}"
        text, count = re.subn(re.escape(start) + r".*?" + re.escape(end), lambda _, b=block: b, text, flags=re.S)
        if count != 1:
            raise SystemExit(f"README.md must contain exactly one {start} ... {end} block")
    return text


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else "README's generated blocks are stale: run python scripts/update_readme.py")
    README.write_text(new, encoding="utf-8")
