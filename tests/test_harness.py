"""The test suite's own rules: helpers live in support modules (a test file never imports another test file), each
fixture name is defined in one place (one name, one meaning), support modules hold no tests pytest would miss, and
the tests are grouped by the package they test (``tests/<package>/test_*.py``)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: the files that may import test helpers: the tests and the benchmarks that reuse them
SOURCES = sorted(p for p in TESTS.rglob("*.py") if "fixtures" not in p.relative_to(TESTS).parts)
IMPORTERS = SOURCES + sorted((ROOT / "benchmarks").glob("*.py"))
#: the folders of ``tests/``: one per package of ``talkingface`` (and the benchmarks), plus the fixtures
GROUPS = {"model", "data", "media", "training", "inference", "evaluate", "synthetic", "app", "commands", "benchmarks"}
#: tests of the suite as a whole, beside the support modules
TOP_LEVEL_TESTS = {"test_harness.py", "test_imports.py"}


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` / ``from ... import`` names, function-level ones included (``from tests import x``
    counts as ``tests.x``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of_test_modules(sources: dict[str, str]) -> list[str]:
    """``"file: module"`` for each import of a ``test_*`` module (by any dotted path) in ``sources``."""
    bad = []
    for name, text in sorted(sources.items()):
        for module in sorted(imported_modules(ast.parse(text))):
            if module.split(".")[-1].startswith("test_"):
                bad.append(f"{name}: {module}")
    return bad


def fixture_names(tree: ast.AST) -> list[str]:
    """Names of the functions decorated with ``pytest.fixture`` / ``fixture`` (with or without arguments; ``name=``
    wins)."""
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
                isinstance(target, ast.Name) and target.id == "fixture"
            ):
                given = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
                names.append(given[0] if given else node.name)
    return names


def defined_twice(sources: dict[str, str]) -> dict[str, list[str]]:
    """Fixture name -> the files that define it, for names defined more than once."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, text in sorted(sources.items()):
        for fixture in fixture_names(ast.parse(text)):
            where[fixture].append(name)
    return {k: v for k, v in where.items() if len(v) > 1}


def uncollected_tests(sources: dict[str, str]) -> list[str]:
    """``"file: function"`` for each top-level ``test_*`` function in a file pytest does not collect."""
    return [
        f"{name}: {node.name}"
        for name, text in sorted(sources.items())
        if not Path(name).name.startswith("test_")
        for node in ast.parse(text).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def read(paths: list[Path]) -> dict[str, str]:
    return {str(p.relative_to(ROOT)) if p.parent != TESTS else p.name: p.read_text() for p in paths}


def test_no_test_file_imports_another() -> None:
    assert imports_of_test_modules(read(IMPORTERS)) == []


def test_each_fixture_name_is_defined_once() -> None:
    assert defined_twice(read(SOURCES)) == {}


def test_support_modules_hold_no_tests() -> None:
    assert uncollected_tests(read(SOURCES)) == []


def test_tests_are_grouped_by_package() -> None:
    """Every test file lies in the folder of the package it tests; only the suite's own checks stay on top."""
    misplaced = [
        str(p.relative_to(TESTS))
        for p in SOURCES
        if p.name.startswith("test_")
        and not (p.parent == TESTS and p.name in TOP_LEVEL_TESTS)
        and not (p.parent.parent == TESTS and p.parent.name in GROUPS)
    ]
    assert misplaced == []
    packages = {p.name for p in (ROOT / "talkingface").iterdir() if (p / "__init__.py").is_file()} - {"configs"}
    assert packages - GROUPS - {"metrics"} == set(), "a package without a test folder"


def test_the_checks_find_what_they_look_for() -> None:
    """The detectors themselves, on planted sources: each way of importing a test module, a fixture defined in two
    files (plain, called, renamed with ``name=``), a test in a support module; and the clean cases pass."""
    planted = {
        "test_a.py": "from test_b import helper\n",
        "test_c.py": "def f():\n    import test_d\n",
        "test_e.py": "from tests import test_f\n",
        "test_g.py": "from tests.test_h import x\n",
        "support.py": "import train_support\nfrom golden import TINY_CONFIG\n",
    }
    assert imports_of_test_modules(planted) == [
        "test_a.py: test_b",
        "test_c.py: test_d",
        "test_e.py: tests.test_f",
        "test_g.py: tests.test_h",
    ]
    fixtures = {
        "conftest.py": "import pytest\n@pytest.fixture\ndef media(): ...\n@pytest.fixture()\ndef x(): ...",
        "test_a.py": "import pytest\n@pytest.fixture(scope='module')\ndef media(): ...\n",
        "test_b.py": "from pytest import fixture\n@fixture(name='x')\ndef _x(): ...\n@fixture\ndef y(): ...\n",
    }
    assert defined_twice(fixtures) == {"media": ["conftest.py", "test_a.py"], "x": ["conftest.py", "test_b.py"]}
    assert uncollected_tests({"train_support.py": "def test_x(): ...\n", "test_y.py": "def test_y(): ...\n"}) == [
        "train_support.py: test_x"
    ]
