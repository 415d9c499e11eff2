"""`make bench` (benchmarks/run_all.py) finds every benchmark, and each has a quick mode and a full mode."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_finds_every_benchmark():
    run_all = _load(BENCH / "run_all.py")
    assert [p.name for p in run_all.benchmarks()] == sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert len(run_all.benchmarks()) >= 4


def test_run_all_refuses_an_unknown_name(capsys):
    run_all = _load(BENCH / "run_all.py")
    with pytest.raises(SystemExit):
        run_all.main(["--only", "no-such-benchmark"])
    assert "no benchmark matches" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(BENCH.glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmark_has_a_quick_mode_that_explicit_flags_override(script, monkeypatch):
    module = _load(script)
    monkeypatch.setattr(sys, "argv", [str(script)])
    full, quick = module.parse_args([]), module.parse_args(["--quick"])
    assert quick.quick and not full.quick
    changed = {k for k in vars(full) if k != "quick" and vars(full)[k] != vars(quick)[k]}
    assert changed, f"{script.name}: --quick changes no size"
    name = sorted(changed)[0]
    flag = "--" + name.replace("_", "-")
    value = str(getattr(full, name))
    assert str(getattr(module.parse_args(["--quick", flag, value]), name)) == value
    assert "ratio: " in script.read_text(), f"{script.name} prints no 'ratio: ' line for the summary"
