"""Regenerate the README's zoo table from the registry (between the zoo markers)."""

import re
import sys
from pathlib import Path

from vipann.zoo.registry import zoo_table

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"


def render(text: str) -> str:
    """Return ``text`` with the zoo block replaced by the generated table."""
    block = f"{START}\n{zoo_table()}\n{END}"
    new, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"README.md must contain exactly one {START} ... {END} block")
    return new


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else "README zoo table is stale: run python scripts/update_readme.py")
    README.write_text(new, encoding="utf-8")
