"""Run every benchmark in benchmarks/ and print each ratio against the baseline it measures in the same run.

Each ``bench_*.py`` runs in its own process (so one's memory peak or thread pool does not colour the
next) with ``--quick`` (small sizes and architectures: a few minutes in all on 2 CPU cores), or in
its full mode with ``--full`` (the sizes its docstring describes: ResNet54, 5-10 s clips; far longer).
Their output is shown as it comes; at the end, every ``ratio:`` line they printed is collected into
one summary, with each benchmark's wall time. Quick-mode ratios are for small models and inputs:
the targets in the scripts are stated for the full sizes.

    python benchmarks/run_all.py                    # make bench
    python benchmarks/run_all.py --full
    python benchmarks/run_all.py --only predict retention
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> list[Path]:
    """Every benchmark script (``benchmarks/bench_*.py``), sorted by name."""
    return sorted(HERE.glob("bench_*.py"))


def run(script: Path, quick: bool) -> tuple[int, list[str], float]:
    """Run one benchmark, echoing its output; returns its exit code, its ``ratio:`` lines and its wall time."""
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    print(f"\n=== {script.name} {'--quick' if quick else '(full)'}", flush=True)
    start = time.perf_counter()
    ratios = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("ratio: "):
                ratios.append(line[len("ratio: ") :].strip())
    return proc.returncode, ratios, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="each benchmark's full mode instead of --quick")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="benchmarks whose name contains NAME")
    args = parser.parse_args(argv)
    scripts = [s for s in benchmarks() if not args.only or any(n in s.stem for n in args.only)]
    if not scripts:
        parser.error(f"no benchmark matches {args.only}; there are {[s.stem for s in benchmarks()]}")
    total = time.perf_counter()
    results = [(script, *run(script, quick=not args.full)) for script in scripts]
    mode = "full" if args.full else "quick"
    print(f"\n=== summary ({mode} mode): each ratio is against the baseline measured in the same run")
    failed = []
    for script, code, ratios, seconds in results:
        status = "" if code == 0 else f"  FAILED (exit {code})"
        print(f"{script.name} ({seconds:.0f} s){status}")
        if code != 0:
            failed.append(script.name)
        elif not ratios:
            print("  no ratio printed")
            failed.append(script.name)
        for ratio in ratios:
            print(f"  {ratio}")
    print(f"total {time.perf_counter() - total:.0f} s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
