import re
from pathlib import Path

from vipann.zoo.registry import zoo_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_zoo_table_matches_registry():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- zoo:start -->\n(.*?)\n<!-- zoo:end -->", text, flags=re.S)
    assert block, "README needs the zoo markers"
    assert block.group(1) == zoo_table(), "stale zoo table: run python scripts/update_readme.py"


def test_readme_has_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
