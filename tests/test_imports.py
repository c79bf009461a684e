"""The package's import graph: no cycles between files or between packages, and the layers only import downwards.

Every ``import talkingface...`` / ``from talkingface... import``, relative import, and string import with a literal
name (``importlib.import_module("talkingface...")``, ``__import__``, ``runpy.run_module``) is read from the source with
``ast``; function-level imports count too: a loop hidden in a function, or behind a string, is still a loop.

Entry points count too: a ``__main__`` module and the body of an ``if __name__ == "__main__":`` block (the older
spellings such as ``python -m talkingface.evaluate``) belong to their package, so they may not import the commands
above it; they become the installed ``talkingface`` program (``talkingface.cli_support.hand_over``: an exec, no
import).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "talkingface"
MODEL = "talkingface.model"

#: The layers, bottom first. A package may import packages of lower layers only (never its own layer's others);
#: every top-level module and package of ``talkingface`` must be listed.
LAYERS: tuple[tuple[str, ...], ...] = (
    # the one family of errors, and the declared ranges of the numeric settings: every layer uses them
    ("talkingface.errors", "talkingface.ranges"),
    # the base: named constants, where the shipped demo model lies, path, .npy and command-line helpers, package data
    (
        "talkingface",
        "talkingface.constants",
        "talkingface.demo_assets",
        "talkingface.paths",
        "talkingface.npy",
        "talkingface.cli_support",
        "talkingface.configs",
    ),
    # python -m talkingface and python -m talkingface.preprocess: programs that hand the command line over to the
    # talkingface command at run time (cli_support.hand_over), importing nothing else
    ("talkingface.__main__", "talkingface.preprocess"),
    ("talkingface.model",),  # the engine
    ("talkingface.media", "talkingface.metrics"),  # the face/audio/video library; image metrics
    ("talkingface.data",),  # the training set on disk
    ("talkingface.training", "talkingface.inference", "talkingface.evaluate"),  # the drivers
    ("talkingface.synthetic",),  # synthetic faces, learnability and the demo, through the drivers
    ("talkingface.app",),  # the web app, through the drivers
    ("talkingface.commands",),  # the commands and their dispatcher
)
STRING_IMPORTERS = ("import_module", "__import__", "run_module")


def _modules(package: Path) -> dict[str, Path]:
    """Every module of the package, ``__main__`` entry points included."""
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` (a module or ``module.attribute``) lives in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_names(tree: ast.AST, package: str) -> list[str]:
    """Every absolute name an ``import``, ``from ... import`` or literal string import of ``tree`` asks for
    (``package``: the package that relative imports start from)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            first = node.args[0]
            if called in STRING_IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.append(first.value)
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        parent = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for name in imported_names(ast.parse(path.read_text(), str(path)), parent):
            target = _owner(name, modules) if name.startswith("talkingface") else None
            # a module importing its own package's __init__ (e.g. for a sibling) is not an edge of the graph
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def package_of(module: str) -> str:
    """The top-level package (or module) of ``talkingface`` that ``module`` belongs to."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph with every module replaced by its top-level package; edges inside a package dropped."""
    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        out.setdefault(package_of(src), set())
        for dst in targets:
            out.setdefault(package_of(dst), set())
            if package_of(dst) != package_of(src):
                out[package_of(src)].add(package_of(dst))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(package: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if package in layer), None)


def unlayered(graph: dict[str, set[str]]) -> list[str]:
    """Top-level packages that no layer lists."""
    return sorted({package_of(m) for m in graph if layer_of(package_of(m)) is None})


def edges_not_down(graph: dict[str, set[str]]) -> list[str]:
    """``src -> dst`` for every module edge to a package of the same layer or a higher one."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            a, b = layer_of(package_of(src)), layer_of(package_of(dst))
            if package_of(src) != package_of(dst) and a is not None and b is not None and b >= a:
                bad.append(f"{src} -> {dst}")
    return bad


def test_no_import_cycles_between_files() -> None:
    found = cycles(import_graph())
    assert not found, "files that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_cycles_between_packages() -> None:
    found = cycles(package_graph(import_graph()))
    assert not found, "packages that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_package_has_a_layer() -> None:
    missing = unlayered(import_graph())
    assert not missing, f"add to LAYERS in {Path(__file__).name}: {', '.join(missing)}"


def test_packages_import_only_lower_layers() -> None:
    bad = edges_not_down(import_graph())
    assert not bad, "imports that do not go down a layer (see LAYERS):\n" + "\n".join(bad)


def test_the_checks_find_what_they_look_for() -> None:
    """The detectors themselves: string imports are read, and a planted loop, package loop and upward edge are
    reported."""
    snippet = (
        "import importlib\n"
        "def f():\n"
        "    importlib.import_module('talkingface.training.module')\n"
        "    __import__('talkingface.synthetic.export')\n"
        "    runpy.run_module('talkingface.app.jobs')\n"
        "    from ..media import decode\n"
    )
    names = imported_names(ast.parse(snippet), "talkingface.model.sub")
    assert {"talkingface.training.module", "talkingface.synthetic.export", "talkingface.model.media"} <= set(names)
    assert "talkingface.app.jobs" in names
    # entry-point code is read as well: a main guard's import is an edge
    guarded = "if __name__ == '__main__':\n    import talkingface.commands.main\n"
    assert imported_names(ast.parse(guarded), "talkingface") == ["talkingface.commands.main"]

    graph = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50  # the real package was read
    planted = {k: set(v) for k, v in graph.items()}
    some_model = next(m for m in planted if m.startswith(MODEL + "."))
    planted[some_model].add("talkingface.commands.train")
    planted["talkingface.commands.train"].add(some_model)
    assert any(some_model in c for c in cycles(planted))
    assert f"{some_model} -> talkingface.commands.train" in edges_not_down(planted)

    # no file-level loop, but two packages that import each other through different files
    planted = {k: set(v) for k, v in graph.items()}
    planted["talkingface.media.decode"].add("talkingface.data.layout")
    assert any({"talkingface.data", "talkingface.media"} <= set(c) for c in cycles(package_graph(planted)))
    assert "talkingface.media.decode -> talkingface.data.layout" in edges_not_down(planted)
    # a sideways edge inside one layer is refused too
    planted = {k: set(v) for k, v in graph.items()}
    planted["talkingface.training.module"].add("talkingface.evaluate.harness")
    assert "talkingface.training.module -> talkingface.evaluate.harness" in edges_not_down(planted)
    planted["talkingface.newpart"] = set()
    assert unlayered(planted) == ["talkingface.newpart"]


@pytest.mark.slow
def test_inference_side_does_not_import_lightning() -> None:
    """Importing inference, the model package and its loader never pulls in Lightning (a fresh interpreter: this
    one has imported the trainer)."""
    code = (
        "import sys, talkingface.inference, talkingface.model.image_driven_talkingface.DiffTalk; "
        "from talkingface.model.image_driven_talkingface.DiffTalk import get_difftalk_inference; "
        "bad = [m for m in ('pytorch_lightning', 'lightning') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
