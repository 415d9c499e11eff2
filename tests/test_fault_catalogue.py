"""scripts/fault_catalogue.py: the catalogue of bad inputs and faults runs against the installed package.

The whole catalogue takes minutes (``python scripts/fault_catalogue.py``); here it is listed, and a
few groups of cases are run, each through the script's command line.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_catalogue.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)


def test_the_catalogue_covers_the_issue():
    result = _run("--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 132
    names = " ".join(line.split()[2] for line in lines)
    for needed in (
        "save-overwrite-project-folder",
        "convert-overwrite-project-folder",
        "killed-between-renames-then-load",
        "killed-while-writing",
        "predict-mixed-files",
        "resume-with-changed-settings",
        "checkpoint-bit-flip",
        "config-reversed-labels",
        "tagging-s1-nan-audio",
        "tagging-s1-1e30-audio",
        "weights-nan-checksum-fixed",
        "predict-n-zero",
        "predict-half-wav",
        "map-empty-class",
        "umask-022",
        "predict-stereo-does-not-hang",
        "predict-meta-audio",
        "predict-device-cuda",
        "retention-not-safetensors",
        "convert-disk-full",
        "convert-out-dot-overwrite",
        "compare-malformed-yaml",
        "esc50-header-only",
        "convert-missing-checkpoint",
        "list-into-head",
        "script-missing-data-root",
        "malicious-pickle",
        "killed-and-resumed",
    ):
        assert needed in names, needed


def test_a_group_of_cases_behaves_as_expected(tmp_path):
    out = tmp_path / "faults.json"
    result = _run("-k", "config-", "--json", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) >= 7 and all(r["observed"] == r["expected"] for r in rows)
    assert re.search(r"not as expected +0\n", result.stdout) and "clear error" in result.stdout
