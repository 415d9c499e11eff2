"""The layers of vipann, written once, and the checker that holds the package to them.

:data:`LAYERS` lists the layers from the bottom up; a module may import modules of its own layer
and of the layers below, never of a layer above, and no set of modules may import each other in a
circle. :func:`check_package` reads every import statement with :mod:`ast` — at module level and
inside functions alike, since a lazy import that closes a circle is still a circle — and returns the
cycles and the upward imports it finds. ``tests/test_layering.py`` requires both lists to be empty;
``scripts/update_readme.py`` renders :data:`LAYERS` into the README's "Architecture" section.

Run ``python -m vipann.utils.layering`` to print the findings for the installed package.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYERS", "Layer", "Violation", "check_package", "import_cycles", "import_graph", "layer_of", "violations"]


@dataclass(frozen=True)
class Layer:
    """One layer of the package.

    Attributes:
        name: Short name.
        modules: Dotted module or package names that belong to it (a package takes its submodules).
        summary: One line: what lives there.
    """

    name: str
    modules: tuple[str, ...]
    summary: str


#: The layers, bottom first. The package's own ``__init__`` (the public facade) stands above them all.
LAYERS: tuple[Layer, ...] = (
    Layer(
        "base",
        ("vipann._version", "vipann.utils"),
        "atomic file writes, module aliases, this layering rule; no other vipann import",
    ),
    Layer(
        "networks",
        ("vipann.layers", "vipann.models"),
        "Flipout and MC-dropout layers and the sampling switch; the log-mel front end, augmentations, "
        "the PANN and EfficientAT families in four methods (one family registry), parameter and MAC counts",
    ),
    Layer(
        "math",
        ("vipann.uncertainty", "vipann.metrics"),
        "tensors in, tensors out: entropy and variance decompositions; classification, calibration, OOD "
        "metrics and retention curves",
    ),
    Layer(
        "data",
        ("vipann.datasets",),
        "audio I/O and resampling, ESC-50 / UrbanSound8K / DCASE2013 / folders / AudioSet HDF5, label sets, "
        "the generated corpus",
    ),
    Layer(
        "zoo",
        ("vipann.zoo",),
        "model names and metadata, model directories (safetensors + config), head types, the Hub, model "
        "cards, converters of original checkpoints, MOPED",
    ),
    Layer(
        "inference",
        ("vipann.inference",),
        "Monte-Carlo prediction (S, B, C) through one sampler protocol; ensembles; applying a temperature",
    ),
    Layer(
        "evaluation",
        ("vipann.evaluation",),
        "from predictions to metrics, retention curves with intervals, files and figures",
    ),
    Layer(
        "calibration",
        ("vipann.calibration",),
        "temperature fitting, SNGP heads (registered with the zoo), pseudo-label selection",
    ),
    Layer(
        "training",
        ("vipann.train",),
        "losses (ELBO, focal), the epoch loop with exact resume, distributed helpers, samplers",
    ),
    Layer(
        "recipes",
        ("vipann.recipes",),
        "AudioSet pre-training, transfer learning, the calibration comparison",
    ),
    Layer(
        "applications",
        ("vipann.cli", "vipann.demo", "vipann.tagging"),
        "the vipann command, the embedded demo, the panns-inference drop-ins",
    ),
)


@dataclass(frozen=True)
class Violation:
    """An import from a lower layer into a higher one (or of the package facade from inside).

    Attributes:
        module: The importing module.
        imported: The imported module.
        line: Line of the import statement.
        reason: What is wrong.
    """

    module: str
    imported: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.reason}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(package_dir: str | Path) -> dict[str, dict[str, int]]:
    """Every module of a package and the package modules it imports, with the line of each import.

    ``import a.b.c`` imports ``a.b.c``; ``from a.b import c`` imports ``a.b`` and, when it is a
    module, ``a.b.c`` (running ``a.b``'s ``__init__`` is part of that import). Relative imports are
    resolved. Imports in functions, methods and ``if`` blocks count like module-level ones.

    Args:
        package_dir: The package directory (e.g. ``vipann``).

    Returns:
        Module -> {imported module -> first line}.
    """
    root = Path(package_dir).resolve()
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, dict[str, int]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != mod:
                    edges.setdefault(resolved, node.lineno)
        graph[mod] = edges
    return graph


def import_cycles(graph: Mapping[str, Mapping[str, int]], exclude: Sequence[str] = ()) -> list[list[str]]:
    """The import cycles of a graph: its strongly connected components of more than one module.

    Args:
        graph: From :func:`import_graph`.
        exclude: Modules left out (the package facade, which imports everything on purpose).

    Returns:
        Each cycle as a sorted list of modules.
    """
    skip = set(exclude)
    edges = {m: [t for t in targets if t not in skip] for m, targets in graph.items() if m not in skip}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def layer_of(module: str, layers: Sequence[Layer] = LAYERS) -> int | None:
    """Index (0 = bottom) of the layer a module belongs to, or None when no layer claims it.

    Args:
        module: Dotted module name.
        layers: The layer table.

    Returns:
        The index.
    """
    for i, layer in enumerate(layers):
        if any(module == m or module.startswith(m + ".") for m in layer.modules):
            return i
    return None


def violations(
    graph: Mapping[str, Mapping[str, int]], package: str, layers: Sequence[Layer] = LAYERS
) -> list[Violation]:
    """Imports that break the layering, and modules that no layer claims.

    Args:
        graph: From :func:`import_graph`.
        package: The top-level package name (its ``__init__`` is the facade above every layer).
        layers: The layer table.

    Returns:
        The violations, sorted by module.
    """
    found = []
    for module in sorted(graph):
        if module == package:
            continue
        own = layer_of(module, layers)
        if own is None:
            found.append(Violation(module, module, 0, "belongs to no layer (add it to LAYERS)"))
            continue
        for imported, line in sorted(graph[module].items()):
            if imported == package:
                found.append(Violation(module, imported, line, "imports the package facade from inside"))
                continue
            theirs = layer_of(imported, layers)
            if theirs is not None and theirs > own:
                found.append(
                    Violation(
                        module,
                        imported,
                        line,
                        f"layer {layers[own].name!r} may not import layer {layers[theirs].name!r} above it",
                    )
                )
    return found


def check_package(package_dir: str | Path, layers: Sequence[Layer] = LAYERS) -> tuple[list[list[str]], list[Violation]]:
    """The import cycles and the layering violations of a package.

    Args:
        package_dir: The package directory.
        layers: The layer table.

    Returns:
        ``(cycles, violations)``; both empty for a well-layered package.
    """
    package = Path(package_dir).resolve().name
    graph = import_graph(package_dir)
    return import_cycles(graph, exclude=(package,)), violations(graph, package, layers)


def markdown_table(layers: Sequence[Layer] = LAYERS) -> str:
    """The layers as a markdown table, top layer first (the README's "Architecture" section).

    Args:
        layers: The layer table.

    Returns:
        The table.
    """
    rows = ["| layer | packages | what lives there |", "|---|---|---|"]
    for layer in reversed(layers):
        packages = ", ".join(f"`{m}`" for m in layer.modules)
        rows.append(f"| {layer.name} | {packages} | {layer.summary} |")
    return "\n".join(rows)


def main() -> int:
    """Print the cycles and violations of the installed vipann; exit status 1 if there are any."""
    cycles, broken = check_package(Path(__file__).resolve().parents[1])
    for cycle in cycles:
        print("cycle: " + " -> ".join(cycle))
    for violation in broken:
        print(violation)
    print(f"{len(cycles)} cycles, {len(broken)} layering violations")
    return 1 if cycles or broken else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
