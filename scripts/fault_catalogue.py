#!/usr/bin/env python
"""Run a catalogue of bad inputs and faults against the installed vipann and print what each one gives.

Every case does what a new user might do wrong (or what a machine might do to them: a full disk, a
kill in the middle of a save, a flipped bit) through the API, the ``vipann`` command or a recipe
script, and observes what happens, in one of these categories:

====================  =========================================================================
clear error           refused with an error that names the problem (and the fix), in one line
correct behaviour     the right result (possibly with a warning that says what happened)
unclear error         refused, but with a message that does not say what is wrong
raw traceback         a traceback from inside the library or its dependencies
silent wrong          a result that is wrong or questionable, with no word about it
data loss             files that were not vipann's are gone (or were overwritten)
hang                  did not finish within the case's time limit
====================  =========================================================================

The table lists, per case, what was expected and what was observed, then the count per category.
The exit status is 0 when every case behaved as expected and 1 otherwise.

    python scripts/fault_catalogue.py                 # every case (a few minutes on 2 CPU cores)
    python scripts/fault_catalogue.py -k predict      # the cases whose name contains "predict"
    python scripts/fault_catalogue.py --json out.json # also write the results as JSON

The recipe-script cases need the repository's ``finetune/`` folder next to this script; without it
they are skipped. Everything runs offline in a temporary folder; nothing outside it is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import cases_audio, cases_cli, cases_data, cases_recipes, cases_zoo  # noqa: F401 (registers cases)
from faults.common import CASES, CATEGORIES, SKIPPED, TRACEBACK, Case, Outcome, first_line

import vipann


# -- running --------------------------------------------------------------------------------------
def run_cases(cases: list[Case], work: Path, verbose: bool = False) -> None:
    """Run every case in its own folder under ``work`` and store its outcome (a failing case is a traceback)."""
    for index, item in enumerate(cases, 1):
        folder = work / f"{index:03d}-{item.name}"
        folder.mkdir(parents=True)
        cwd = os.getcwd()
        start = time.perf_counter()
        try:
            item.outcome = item.run(folder)
        except Exception as exc:  # the case itself failed: report it, never hide it
            item.outcome = Outcome(TRACEBACK, f"case error {type(exc).__name__}: {first_line(str(exc))}")
        finally:
            os.chdir(cwd)
        item.seconds = time.perf_counter() - start
        if verbose:
            mark = "ok" if item.outcome.category in (item.expected, SKIPPED) else "!!"
            print(f"[{mark}] {index:3d} {item.name}: {item.outcome.category} ({item.seconds:.1f} s)", file=sys.stderr)


def print_table(cases: list[Case]) -> None:
    """Print one row per case: group, name, expected and observed category, detail (``<-``: not as expected)."""
    rows = [("#", "group", "case", "expected", "observed", "detail")]
    for index, item in enumerate(cases, 1):
        outcome = item.outcome or Outcome(SKIPPED)
        flag = "" if outcome.category in (item.expected, SKIPPED) else " <-"
        rows.append(
            (str(index), item.group, item.name, item.expected, outcome.category + flag, first_line(outcome.detail, 90))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the catalogue (or the cases selected with ``-k``) and print the table and the counts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", "--filter", default="", help="only cases whose name or group contains this text")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each case as it finishes (stderr)")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.filter in c.name or args.filter in c.group]
    if args.list:
        for index, item in enumerate(cases, 1):
            print(f"{index:3d}  {item.group:<10s} {item.name:<44s} {item.expected:<18s} {item.description}")
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vipann-faults-") as tmp:
        work = Path(tmp)
        previous = {k: os.environ.get(k) for k in ("VIPANN_CACHE_DIR", "HF_HUB_OFFLINE", "VIPANN_DEBUG", "HOME")}
        os.environ.update(
            VIPANN_CACHE_DIR=str(work / "cache"), HF_HUB_OFFLINE="1", VIPANN_DEBUG="0", HOME=str(work / "home")
        )
        try:
            run_cases(cases, work / "cases", args.verbose)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    print_table(cases)
    counts = Counter(c.outcome.category for c in cases if c.outcome is not None)
    expected = Counter(c.expected for c in cases if c.outcome is not None and c.outcome.category != SKIPPED)
    print()
    seconds = time.perf_counter() - start
    print(f"{len(cases)} cases in {seconds:.0f} s (vipann {vipann.__version__}, torch {torch.__version__})")
    for category in (*CATEGORIES, SKIPPED):
        if counts.get(category) or expected.get(category):
            print(f"  {category:<18s} {counts.get(category, 0):4d}   (expected {expected.get(category, 0)})")
    unexpected = [c for c in cases if c.outcome is not None and c.outcome.category not in (c.expected, SKIPPED)]
    print(f"  {'not as expected':<18s} {len(unexpected):4d}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "case": c.name,
                        "group": c.group,
                        "description": c.description,
                        "expected": c.expected,
                        "observed": c.outcome.category if c.outcome else None,
                        "detail": c.outcome.detail if c.outcome else None,
                        "seconds": round(c.seconds, 2),
                    }
                    for c in cases
                ],
                indent=2,
            )
        )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
