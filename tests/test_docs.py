"""The documentation runs: README.md and docs/*.md, checked as a new user would use them.

* **Python blocks** (```python): each is executed on its own, as written, in a fresh namespace and a
  temporary working directory that holds ``tests/data`` (paths in the docs are relative to the
  repository root) and an empty ``VIPANN_CACHE_DIR``. A block right after
  ``<!-- docs-test: skip (REASON) -->`` needs files that cannot be obtained here (the original
  checkpoints): it is compiled and its import statements are executed, so a renamed function still
  fails, and the rest is skipped with REASON.
* **Shell commands**: every command line of the ```bash blocks and every command written in inline
  code (```vipann ...```, ```make ...```, ...) has an entry in :data:`WHERE`: the test here that runs it
  as written (the quick ones run in the suite; the ones marked ``docs-check`` take minutes and run
  under ``make docs-check``, which sets ``VIPANN_DOCS_CHECK=1``), or why it cannot run here. A
  command added to the docs without an entry fails :func:`test_every_command_has_a_place`.
* **Names and paths**: every ``vipann.X`` name and every repository path (``tests/...``,
  ``finetune/...``, ...) the docs mention exists, every ``vipann SUBCOMMAND`` they mention is one,
  and every recipe config they name loads.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"^<!-- docs-test: skip \((?P<reason>.+)\) -->$")
DOCS_CHECK = bool(os.environ.get("VIPANN_DOCS_CHECK"))
docs_check = pytest.mark.skipif(not DOCS_CHECK, reason="takes minutes: run by `make docs-check`")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # line number of the first code line
    lang: str
    code: str
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the skip reason of the marker right above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            mark = SKIP_MARK.match(lines[i - 1].strip()) if i > 0 else None
            found.append(Block(path, start + 1, lang, "\n".join(lines[start:end]) + "\n", mark and mark["reason"]))
            i = end
        i += 1
    return found


ALL_BLOCKS = [b for path in DOCS for b in blocks(path)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python"]


def test_every_block_says_its_language_and_every_marker_is_well_formed():
    assert PYTHON_BLOCKS, "no python block found: the parser is broken"
    for block in ALL_BLOCKS:
        assert block.lang, f"{block.where}: a code block without a language (```python, ```bash, ```text, ...)"
        if block.skip:
            assert block.lang == "python", f"{block.where}: a docs-test marker on a {block.lang} block"
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("<!--") and "docs-test" in line:
                assert SKIP_MARK.match(line.strip()), (
                    f"{path.name}:{number}: write the marker as <!-- docs-test: skip (REASON) -->"
                )


@pytest.fixture
def doc_dir(tmp_path, monkeypatch):
    """A working directory as a reader has one: ``tests/data`` where the docs say, an empty vipann cache."""
    work = tmp_path / "work"
    (work / "tests").mkdir(parents=True)
    (work / "tests" / "data").symlink_to(ROOT / "tests" / "data", target_is_directory=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("VIPANN_CACHE_DIR", str(tmp_path / "cache"))
    return work


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_runs(block, doc_dir):
    # Padded so that a traceback names the line of the markdown file.
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, str(block.path), "exec")
    if block.skip:
        tree = ast.parse(source)
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), str(block.path), "exec"), {})
        pytest.skip(f"{block.where}: {block.skip} (imports checked)")
    exec(code, {"__name__": "__docs__"})


# ------------------------------------------------------------------------------------------------ shell commands
COMMAND = re.compile(  # a program with arguments, or a script of the repository
    r"^(?:time +)?(?:[A-Z_]+=(?:\$\([^)]*\)|\S)+ +)*"
    r"(?:(?:vipann|make|torchrun|python|pip|hf) |(?:\.venv/bin/\S+|finetune/\S+\.py|scripts/\S+\.sh)(?: |$))"
)
SUBCOMMAND_MENTION = re.compile(r"^vipann ([a-z][a-z-]*)$")


def _logical_lines(code: str) -> list[str]:
    text = re.sub(r"\s*\\\n\s*", " ", code)
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _inline_code(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", text)


def doc_commands() -> dict[str, list[str]]:
    """Every shell command in the docs -> where it is written."""
    found: dict[str, list[str]] = {}
    for block in ALL_BLOCKS:
        if block.lang == "bash":
            for line in _logical_lines(block.code):
                found.setdefault(line, []).append(block.where)
    for path in DOCS:
        for span in _inline_code(path):
            if COMMAND.match(span) and not SUBCOMMAND_MENTION.match(span):
                found.setdefault(span, []).append(path.name)
    return found


def command(start: str) -> str:
    """The documented command ``start``, or the one that starts with ``start``, exactly as written."""
    found = doc_commands()
    if start in found:
        return start
    matches = sorted(c for c in found if c.startswith(start))
    assert len(matches) == 1, f"expected one documented command starting with {start!r}, found {matches}"
    return matches[0]


CHECKPOINT = "needs an original checkpoint (Zenodo / VI-PANN), which cannot be downloaded here"
# Every shell command of README.md and docs/: the test that runs it as written, or why none can.
WHERE = {
    "make demo": "test_make_demo (docs-check)",
    "make test": "not run here: it is the suite itself (CI runs it, .ci/run)",
    ".venv/bin/python -m pytest -q": "not run here: it is the suite itself (make test)",
    "make lint": "test_make_lint (docs-check)",
    "time VIPANN_CACHE_DIR=$(mktemp -d) .venv/bin/vipann demo": "test_timed_demo (docs-check)",
    'vipann list "flip-*"': "test_list_command",
    "vipann info flip-resnet54 --num-classes 50 --seconds 5 --convention paper": "test_info_command_gives_table1",
    "vipann predict clip.wav other.wav -m flip-demo -n 10 --top-k 3": "test_predict_command",
    "vipann example-data example/": "test_example_data_evaluate_retention (docs-check); "
    "test_example_data_quick_evaluate_retention runs it with --quick",
    "vipann evaluate -m local-dir:example/flip-demo-downstream --dataset synthetic_downstream "
    "--data-root example/downstream --folds 1 --out results/": "test_example_data_quick_evaluate_retention, "
    "test_example_data_evaluate_retention (docs-check)",
    "vipann retention results/predictions.safetensors --out figures/": "test_example_data_quick_evaluate_retention, "
    "test_example_data_evaluate_retention (docs-check)",
    "vipann compare": "test_compare_on_demo_data (docs-check)",
    "vipann example-data DIR": "test_example_data_evaluate_retention (docs-check) runs it with DIR=example/",
    "make docs-check": "not run by a test: it runs this file with VIPANN_DOCS_CHECK=1",
    "make bench": "not run by a test: it is the benchmark target (minutes of timings, no assertion); "
    "tests/test_benchmarks.py checks that it finds every benchmark and each has a quick mode",
    "python benchmarks/bench_det_forward.py": "not run here at full size (minutes of timings); "
    "tests/test_mc_benchmarks.py runs it with --quick",
    "python benchmarks/run_all.py --full": "not run by a test: the full sizes (ResNet54, long clips) take far longer",
    "python -m vipann.utils.layering": "test_layering_command",
    "scripts/setup.sh test": "make docs-check runs it first (its setup-test prerequisite)",
    "scripts/setup.sh": "test_make_demo (docs-check): make demo runs it first (its setup prerequisite)",
    "pip install --no-deps bayesian-torch==0.5.0": "scripts/setup.sh test runs exactly this install when "
    "bayesian-torch is missing (make docs-check's prerequisite)",
    "vipann convert auto ResNet54_mAP=0.429.pth --name flip-resnet54 --out ./flip-resnet54": f"not run here: "
    f"{CHECKPOINT}; tests/cli/test_cli.py converts seeded checkpoints of the same layout",
    "vipann card ./flip-resnet54 && vipann push ./flip-resnet54 --repo-id ORG/flip-resnet54 --dry-run": "not run "
    "here: needs ./flip-resnet54 from the line before; tests/cli/test_cli.py runs card and push --dry-run on a "
    "converted directory",
    "vipann convert auto ~/panns_data/Cnn14_mAP=0.431.pth --out ./det-cnn14": f"not run here: {CHECKPOINT}",
    "vipann convert auto FILE": "not run here: FILE stands for any original checkpoint",
    "vipann compare --config finetune/configs/compare-esc50.yaml --data-root ESC-50-master --ood-root ShipsEar": (
        "not run here: needs ESC-50, ShipsEar and flip-resnet54's checkpoint; tests/recipes/test_compare.py runs "
        "the same code on generated ESC-50-layout data"
    ),
    "torchrun --nproc_per_node 2 finetune/compare.py --config finetune/configs/compare-esc50.yaml --data-root ...": (
        "not run here: ESC-50 and two processes on its data"
    ),
    "finetune/finetune.py --config finetune/configs/esc50-flip.yaml --data-root ESC-50-master": (
        "not run here: needs ESC-50 and flip-resnet54's checkpoint; tests/recipes/test_transfer.py runs the "
        "script on generated ESC-50-layout data"
    ),
    "torchrun --nproc_per_node N finetune/finetune.py ...": "not run here: a real dataset on N processes",
    "finetune/pretrain.py --config finetune/configs/audioset-det.yaml --train a.h5,b.h5 --eval eval.h5": (
        "not run here: needs AudioSet's HDF5 files; tests/recipes/test_pretrain.py runs the recipe on generated ones"
    ),
    "scripts/build_demo_zoo.sh": "not run by make docs-check: it takes 20-70 min on 2 CPU cores and rewrites the "
    "shipped weights in vipann/data/zoo; test_every_named_config_loads loads its configs",
    "vipann zoo import Cnn14_mAP=0.431.pth": f"not run here: {CHECKPOINT}; tests/zoo/test_release.py imports a "
    "seeded file of the same layout under its name",
    "vipann zoo import FILE": "not run here: FILE stands for any original checkpoint (tests/zoo/test_release.py, "
    "tests/zoo/test_efficientat_release.py)",
    "vipann zoo import flipout.pth": f"not run here: {CHECKPOINT}; tests/zoo/test_zoo_build.py imports a seeded "
    "flipout.pth",
    "vipann convert vipann flipout.pth": f"not run here: {CHECKPOINT}; tests/cli/test_cli.py converts seeded "
    "VI-PANN checkpoints",
    "vipann zoo build --from checkpoints/ --out zoo/": f"not run here: {CHECKPOINT}; tests/zoo/test_zoo_build.py "
    "builds a zoo from seeded files",
    "vipann zoo build --from DIR --out ZOO": "not run here: DIR stands for a folder of original checkpoints "
    "(tests/zoo/test_zoo_build.py)",
    "vipann zoo publish zoo/ --org ORG --dry-run": "not run here: needs the zoo/ the line before builds; "
    "tests/zoo/test_zoo_build.py publishes to a local Hub-shaped server",
    "vipann zoo publish ZOO --org ORG": "not run here: the Hub is not reachable (tests/zoo/test_zoo_build.py "
    "publishes to a local Hub-shaped server)",
    "vipann info NAME --convention ...": "not run here: NAME stands for any registry name; "
    "test_info_command_gives_table1 runs the paper's",
    "vipann convert efficientat mn10_as_mAP_471.pt --name drop-mn10 --out ./drop-mn10": "not run here: needs "
    "EfficientAT's release file; tests/tagging/test_efficientat_tagging.py converts a synthetic one",
    "python finetune/fixmatch.py --config finetune/configs/esc50-fixmatch.yaml --data-root ESC-50-master": (
        "not run here: needs ESC-50; tests/recipes/test_fixmatch.py runs the recipe on generated ESC-50-layout data"
    ),
    "python finetune/fixmatch.py --config finetune/configs/esc50-fixmatch-table1.yaml --data-root ESC-50-master": (
        "not run here: needs ESC-50; test_every_named_config_loads loads its config"
    ),
    "torchrun --nproc_per_node 2 finetune/fixmatch.py --config finetune/configs/esc50-fixmatch.yaml "
    "--data-root ...": "not run here: ESC-50 on two processes; tests/recipes/test_fixmatch.py runs two "
    "processes on generated data",
    'python -c "from vipann.datasets.synthetic import make_downstream; '
    "make_downstream('data/downstream-1s', clips_per_class_per_fold=8, clip_seconds=1.0)\"": "test_fixmatch_demo "
    "(docs-check)",
    "python finetune/fixmatch.py --config finetune/configs/demo-fixmatch.yaml --data-root data/downstream-1s "
    "--out runs/demo-fixmatch": "test_fixmatch_demo (docs-check)",
    "hf download ORG/NAME": "not run here: the Hub is not reachable (ORG/NAME stands for a model repository)",
    "VIPANN_PANNS_CHECKPOINT=~/panns_data/Cnn14_mAP=0.431.pth .venv/bin/python -m pytest "
    "tests/tagging/test_audio_tagging.py -k published": f"not run here: {CHECKPOINT}; "
    "test_published_output_check_selects_a_test checks that it selects the test",
}


def test_every_command_has_a_place():
    found = doc_commands()
    missing = {c: places for c, places in found.items() if c not in WHERE}
    assert not missing, f"documented commands with no entry in tests/test_docs.py WHERE: {missing}"
    stale = sorted(set(WHERE) - set(found))
    assert not stale, f"WHERE lists commands the docs no longer contain: {stale}"
    for cmd, where in WHERE.items():
        for name in re.findall(r"(?<![/\w])test_\w+\b(?!\.)", where):  # not tests/.../test_x.py
            assert callable(globals().get(name)), f"{cmd!r}: WHERE names {name}, which is not a test in this file"
        assert re.search(r"\btest_\w+|not run|runs? (it|exactly)", where), (cmd, where)


def test_every_mentioned_subcommand_exists():
    from vipann.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    mentioned = {m[1] for path in DOCS for span in _inline_code(path) if (m := SUBCOMMAND_MENTION.match(span.strip()))}
    mentioned |= {c.split()[1] for c in doc_commands() if c.startswith("vipann ")}
    assert mentioned and mentioned <= set(sub.choices), sorted(mentioned - set(sub.choices))


def _bash(cmd: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run a documented command line as written, with this Python's environment first on PATH."""
    environ = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env)
    result = subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{cmd}\nexit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_list_command(doc_dir):
    import vipann

    out = _bash(command("vipann list "), doc_dir).stdout.splitlines()
    assert out[0].split()[0] == "name"
    assert [line.split()[0] for line in out[1:]] == vipann.list_models("flip-*")


def test_info_command_gives_table1(doc_dir):
    out = _bash(command("vipann info flip-resnet54"), doc_dir).stdout
    fields = dict(line.strip().split(": ", 1) for line in out.splitlines() if ": " in line)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| Flip |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert fields["trainable_parameters"] == cells[1] and fields["macs"] == cells[3], (fields, row)


def test_predict_command(doc_dir):
    import soundfile as sf

    from vipann.datasets.synthetic import render_clip

    for index, name in enumerate(("clip.wav", "other.wav")):
        wave, _ = render_clip(index, split="eval", seed=0)
        sf.write(doc_dir / name, wave, 16000)
    out = _bash(command("vipann predict "), doc_dir).stdout.splitlines()
    heads = [line for line in out if not line.startswith(" ")]
    assert [h.split()[0] for h in heads] == ["clip.wav", "other.wav"] and all("S=10" in h for h in heads)
    assert len(out) == 2 * (1 + 3), out  # a header and the top 3 labels per file


def _check_evaluation(work: Path, clips: int) -> None:
    metrics = json.loads((work / "results" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["clips"] == clips
    assert (work / "figures" / "retention.png").stat().st_size > 0
    assert (work / "figures" / "retention.csv").read_text().startswith("fraction")


def test_example_data_quick_evaluate_retention(doc_dir):
    import vipann

    _bash(command("vipann example-data example/") + " --quick", doc_dir)
    model = vipann.from_pretrained("local-dir:example/flip-demo-downstream")
    assert model.num_classes == 10 and model.method == "flip"
    _bash(command("vipann evaluate "), doc_dir)
    _bash(command("vipann retention "), doc_dir)
    _check_evaluation(doc_dir, clips=10 * 2)  # quick: 2 clips per class in fold 1


@docs_check
def test_example_data_evaluate_retention(doc_dir):
    for start in ("vipann example-data example/", "vipann evaluate ", "vipann retention "):
        _bash(command(start), doc_dir)
    _check_evaluation(doc_dir, clips=10 * 4)  # the demo's sizes: 4 clips per class and fold


@docs_check
def test_fixmatch_demo(doc_dir):
    (doc_dir / "finetune").symlink_to(ROOT / "finetune", target_is_directory=True)
    _bash(command('python -c "from vipann.datasets.synthetic import make_downstream'), doc_dir)
    _bash(command("python finetune/fixmatch.py --config finetune/configs/demo-fixmatch.yaml"), doc_dir, timeout=1800)
    out = doc_dir / "runs" / "demo-fixmatch"
    table2 = (out / "table2.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("<!-- fixmatch-demo:start -->")[1].split("<!-- fixmatch-demo:end -->")[0]
    rows = [line.split("|")[1].strip() for line in table2.splitlines() if line.startswith("| ")]
    assert rows and all(f"| {row} |" in shown for row in rows), (rows, shown)
    assert (out / "pseudo_labels.png").is_file() and (out / "table1.md").is_file()


def test_layering_command(doc_dir):
    assert "0 cycles, 0 layering violations" in _bash(command("python -m vipann.utils.layering"), ROOT).stdout


def test_published_output_check_selects_a_test():
    cmd = command("VIPANN_PANNS_CHECKPOINT=")
    args = cmd.split(".venv/bin/python -m pytest ", 1)[1].split()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert re.search(r"^1 test collected|^\d+/\d+ tests collected \(\d+ deselected\)", result.stdout, re.M), (
        result.stdout
    )
    assert "published" in result.stdout


@docs_check
def test_make_demo():
    _bash(command("make demo"), ROOT, timeout=3600)
    assert (ROOT / "vipann-demo" / "report.html").stat().st_size > 0
    _check_demo_exports(ROOT / "vipann-demo")


@docs_check
def test_timed_demo(tmp_path):
    result = _bash(command("time VIPANN_CACHE_DIR="), ROOT, timeout=3600, TMPDIR=str(tmp_path))
    assert "real" in result.stderr and (ROOT / "vipann-demo" / "report.md").is_file()


def _check_demo_exports(out: Path) -> None:
    import vipann

    for strategy in ("det", "drop", "flip", "detflip"):
        model = vipann.from_pretrained(f"local-dir:{out / 'transfer' / strategy / 'fold1' / 'finetuned' / 'export'}")
        assert model.num_classes == 10 and model.method == strategy


@docs_check
def test_make_lint():
    _bash(command("make lint"), ROOT)


@docs_check
def test_compare_on_demo_data(doc_dir):
    _bash(command("vipann compare"), doc_dir, timeout=3600)
    table = (doc_dir / "runs" / "compare" / "comparison.md").read_text()
    assert "temperature" in table and "ensemble" in table


# ------------------------------------------------------------------------------------------------ names and paths
PATH = re.compile(r"(?<![\w./~-])((?:tests|vipann|finetune|scripts|benchmarks|docs|hub_cards)/[\w./*=-]*[\w*/])")
NAME = re.compile(r"(?<![\w.])vipann(?:\.\w+)+")


def _mentions(pattern: re.Pattern) -> set[str]:
    found = set()
    for path in DOCS:
        spans = _inline_code(path) + [b.code for b in blocks(path) if b.lang in ("text", "bash")]
        for span in spans:
            found.update(pattern.findall(span))
    return found


def test_every_mentioned_path_exists():
    paths = _mentions(PATH)
    assert "tests/tagging/test_audio_tagging.py" in paths
    missing = sorted(p for p in paths if not list(ROOT.glob(p.rstrip("/"))))
    assert not missing, f"the docs name paths that do not exist: {missing}"


def _resolve(name: str) -> object:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def test_every_mentioned_name_exists():
    names = _mentions(NAME)
    assert "vipann.tagging.CheckpointNotFoundError" in names
    broken = {}
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            broken[name] = repr(exc)
    assert not broken, f"the docs name what does not exist: {broken}"


def test_every_named_config_loads():
    from vipann.recipes.compare import CompareConfig
    from vipann.recipes.config import load_config
    from vipann.recipes.fixmatch_config import FixMatchConfig
    from vipann.recipes.pretrain import PretrainConfig
    from vipann.recipes.transfer_config import TransferConfig

    named = sorted({p for pattern in _mentions(PATH) if pattern.endswith(".yaml") for p in ROOT.glob(pattern)})
    named += sorted(ROOT.glob("finetune/configs/demo-*.yaml"))  # scripts/build_demo_zoo.sh
    assert len(named) >= 6
    for path in named:
        kind = path.name.split("-")[0]
        if "fixmatch" in path.name:
            load_config(FixMatchConfig, path, {"data_root": "data"})
        elif kind == "compare":
            load_config(CompareConfig, path, {"data_root": "data"})
        elif kind in ("audioset", "demo"):
            load_config(PretrainConfig, path, {"train": "train.h5", "eval": "eval.h5"})
        else:
            load_config(TransferConfig, path, {"data_root": "data"})
