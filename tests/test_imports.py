"""The package's import graph: no cycles, and the layers only import downwards.

Every ``import talkingface...`` / ``from talkingface... import`` and relative import is read from the source with
``ast`` (function-level imports included: a loop hidden in a function is still a loop).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "talkingface"
MODEL = "talkingface.model"
#: packages the model package must never import: the engine knows nothing of the drivers
ABOVE_MODEL = ("talkingface.data", "talkingface.training", "talkingface.inference", "talkingface.evaluate")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = _owner(name, modules) if name.startswith("talkingface") else None
                # a module importing its own package's __init__ (e.g. for a sibling) is not an edge of the graph
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
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


def forbidden_edges(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{src} -> {dst}"
        for src, targets in sorted(graph.items())
        if src.startswith(MODEL)
        for dst in sorted(targets)
        if dst.startswith(ABOVE_MODEL)
    ]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_model_package_imports_no_driver() -> None:
    assert forbidden_edges(import_graph()) == []


def test_the_checks_find_what_they_look_for() -> None:
    """The detectors themselves: a planted two-module loop and an upward edge are reported."""
    graph = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50  # the real package was read
    planted = {k: set(v) for k, v in graph.items()}
    some_model = next(m for m in planted if m.startswith(MODEL + "."))
    planted[some_model].add("talkingface.training.cli")
    planted["talkingface.training.cli"].add(some_model)
    assert any(some_model in c for c in cycles(planted))
    assert f"{some_model} -> talkingface.training.cli" in forbidden_edges(planted)


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
