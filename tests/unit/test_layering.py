"""Layering: nothing outside tests/ depends on the tests, and the API package stays pure.

Read from the source (ast), so a forbidden import fails here even where nothing imports the module.
The demo, the benches and the packages use the devkit (`storyteller_devkit`) for what they share with
the tests; `storyteller_api` is the contract both the worker and the operator build on, so it must not
pull in LiveKit or a Kubernetes client.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Top-level folders that are not checked: the tests themselves and build output (dot-folders neither).
NOT_SOURCE = {"tests", "build", "dist"}
API_PACKAGE = ROOT / "api" / "storyteller_api"
API_FORBIDDEN = {"livekit", "kubernetes", "kopf"}
# A dotted path into the tests package as a string, e.g. `python -m tests.fakes.x` or a logger name.
TESTS_MODULE_STRING = re.compile(r"^tests(\.[A-Za-z_]\w*)+$")


def _python_files(top: Path) -> Iterator[Path]:
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info") for p in parts):
            continue
        yield path


def source_files() -> list[Path]:
    """Every .py file of the repository outside tests/ (api/, worker/, operator/, devkit/, demo/, ...)."""
    files: list[Path] = []
    for top in sorted(ROOT.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and top.name not in NOT_SOURCE:
            files.extend(_python_files(top))
    files.extend(sorted(ROOT.glob("*.py")))
    return files


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path` (`from x import y` gives `x`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_the_scan_covers_every_package_and_tool() -> None:
    scanned = {p.relative_to(ROOT).parts[0] for p in source_files()}
    expected = {"worker", "operator", "devkit", "demo", "bench", "crds", "dashboards"}
    if API_PACKAGE.is_dir():
        expected.add("api")
    assert expected <= scanned, f"not scanned: {sorted(expected - scanned)}"
    assert "tests" not in scanned


def test_nothing_outside_tests_imports_the_tests() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in source_files()
        for line, module in imported_modules(path)
        if _top(module) == "tests"
    ]
    assert offenders == [], "use storyteller_devkit instead:\n" + "\n".join(offenders)


def test_nothing_outside_tests_runs_a_tests_module() -> None:
    # `python -m tests.x` in a subprocess is an import of the tests all the same.
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}: names {node.value!r}"
        for path in source_files()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and TESTS_MODULE_STRING.match(node.value)
    ]
    assert offenders == [], "\n".join(offenders)


def test_the_api_package_imports_no_livekit_and_no_kubernetes_client() -> None:
    # An absent package (not written yet) has nothing to check: the assertion holds over no files.
    files = list(_python_files(API_PACKAGE)) if API_PACKAGE.is_dir() else []
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in files
        for line, module in imported_modules(path)
        if _top(module) in API_FORBIDDEN
    ]
    assert offenders == [], "storyteller_api must stay pure:\n" + "\n".join(offenders)
