"""The Monte-Carlo benchmarks (issue 18) run end to end in their quick modes, on tiny sizes.

Each script runs in its own process, as ``make bench`` runs it; the tests check what it prints
(every ``ratio:`` line a positive number) and never a timing.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["bench_predict.py", "bench_det_forward.py", "bench_mc_quality.py", "gpu_check.py"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_mc_bench_{Path(name).stem}", BENCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"{name} {args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ratios(text: str) -> list[float]:
    lines = [line for line in text.splitlines() if line.startswith("ratio: ")]
    assert lines, f"no 'ratio: ' line in:\n{text}"
    values = [float(m) for line in lines for m in re.findall(r"([0-9.]+)(?:x| %)", line)[:1]]
    assert len(values) == len(lines), lines
    assert all(v > 0 for v in values), lines
    return values


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_mode_changes_sizes_and_explicit_flags_win(name):
    module = _load(name)
    full, quick = module.parse_args([]), module.parse_args(["--quick"])
    assert quick.quick and not full.quick
    changed = sorted(k for k in vars(full) if k != "quick" and vars(full)[k] != vars(quick)[k])
    assert changed, f"{name}: --quick changes no size"
    for key in (k for k in changed if getattr(full, k) is not None):  # None: "chosen per method"
        flag, value = "--" + key.replace("_", "-"), str(getattr(full, key))
        assert str(getattr(module.parse_args(["--quick", flag, value]), key)) == value


def test_bench_predict_prints_speed_and_memory_ratios_for_both_draws():
    out = _run("bench_predict.py", "--quick", "--arch", "tiny", "--samples", "4", "--seconds", "1", "--repeats", "1")
    _ratios(out)
    expected = {"detflip": ("shared", "independent"), "flip": ("shared", "independent"), "drop": ("default",)}
    for method, modes in expected.items():
        for mode in modes:
            assert re.search(rf"^ratio: {method}-tiny S=4 B=2 draws={mode}: [0-9.]+x", out, re.M), (method, mode)
            assert re.search(rf"^ratio: memory {method}-tiny draws={mode}: peak \d+ MiB", out, re.M), (method, mode)
    assert "target >= 25x" in out and "target <= 2x" in out and "load average" in out


def test_bench_predict_profiles_drop():
    out = _run(
        "bench_predict.py", "--quick", "--arch", "tiny", "--methods", "drop", "--samples", "3", "--seconds", "1",
        "--repeats", "1", "--no-memory", "--profile",
    )  # fmt: skip
    assert re.search(r"self CPU time by kind: convolution \d+%", out)
    assert "GFLOP/s" in out


def test_bench_det_forward_compares_every_variant_with_fp32():
    out = _run("bench_det_forward.py", "--quick", "--arch", "tiny", "--seconds", "1", "--repeats", "1")
    _ratios(out)
    variants = ("fp32", "bn-folded", "channels_last", "onednn-bf16", "bf16-autocast", "bf16-autocast+channels_last")
    for variant in variants:
        assert re.search(rf"^  {re.escape(variant)} +[0-9.]+ s .* max\|dp\| [0-9.e+-]+", out, re.M), variant
    row = r"^  compiled +[0-9.]+ s .* max\|dp\| ([0-9.e+-]+) \(trained det-demo ([0-9.e+-]+)\)"
    compiled = re.search(row, out, re.M)
    if compiled is None:  # a machine without a C++ compiler: the variant says why it is left out
        assert "compiled: unavailable (" in out
    else:  # inductor with frozen weights computes the same function
        assert float(compiled.group(1)) < 1e-5 and float(compiled.group(2)) < 1e-5
    fp32 = re.search(r"^  fp32 .* max\|dp\| ([0-9.e+-]+)", out, re.M)
    assert float(fp32.group(1)) == 0.0  # the reference against itself
    assert re.search(r"matmul peak \(2048\^3\): fp32 [0-9.]+ GFLOP/s", out)


def test_bench_mc_quality_reports_variances_and_effective_samples():
    out = _run("bench_mc_quality.py", "--quick", "--samples", "4,8", "--seeds", "4")
    _ratios(out)
    for method in ("detflip", "flip"):
        for samples in (4, 8):
            assert re.search(rf"^ratio: {method}-tiny S={samples} effective samples per second", out, re.M)
            for mode in ("independent", "shared", "shared/1"):
                row = re.search(rf"^ +{samples} +{re.escape(mode)} +([0-9.]+) +([0-9.e+-]+) ", out, re.M)
                assert row, (method, samples, mode)
                assert float(row.group(2)) > 0  # a Monte-Carlo variance over seeds, never exactly 0


def test_gpu_check_dry_run_on_cpu_writes_its_table(tmp_path):
    out = _run("gpu_check.py", "--device", "cpu", "--quick", "--samples", "3", env={"OUT": str(tmp_path)})
    assert "agreement: all checks passed" in out
    payload = json.loads((tmp_path / "gpu_check.json").read_text())
    methods = {(r["dtype"], r["method"]) for r in payload["rows"]}
    assert methods == {(d, m) for d in ("fp32", "bf16") for m in ("det", "detflip", "drop", "flip")}
    assert all(r["shared_s"] > 0 and r["independent_s"] > 0 for r in payload["rows"] if r["method"] != "det")
    assert "| dtype | B | method |" in (tmp_path / "gpu_check.md").read_text()
    _ratios(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_without_cuda_says_so_and_succeeds():
    out = _run("gpu_check.py", "--quick")
    assert "no CUDA device here, nothing measured" in out
