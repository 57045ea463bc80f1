"""What the layout promises, checked on the source: no loose modules at the package root, thin plugin
modules, no import cycle (counting lazy imports inside functions too), and verdicts never import the report
package (reports read verdicts)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lora_harness"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (lazy imports count too); not imports
    under `if TYPE_CHECKING:`, which never run."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(child) for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body for child in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules importing it runs (a submodule's import runs its packages' __init__ too)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for imported in imported_modules(path):
            parts = imported.split(".")
            edges.update(
                ".".join(parts[:i]) for i in range(2, len(parts) + 1)
                if ".".join(parts[:i]) in modules and not name.startswith(".".join(parts[:i]))
            )
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_root_holds_no_loose_modules() -> None:
    """Every module lives in a folder that says its role (core, run, sources, judges, verdicts, plugin, ...)."""
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_plugin_modules_stay_thin() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (PACKAGE / "plugin").glob("*.py")}
    assert len(sizes) >= 8 and max(sizes.values()) < 250, sizes


def test_no_import_cycle_even_through_lazy_imports() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_verdict_modules_import_nothing_from_the_report_package() -> None:
    offenders = {
        f"{path.name}: {module}"
        for path in sorted((PACKAGE / "verdicts").glob("*.py"))
        for module in imported_modules(path)
        if module == "lora_harness.report" or module.startswith("lora_harness.report.")
    }
    assert not offenders, f"verdict modules import the report package: {sorted(offenders)}"


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lora_harness.report.csv import x\n    import lora_harness.report.view\n")
    assert imported_modules(module) == {"lora_harness.report.csv", "lora_harness.report.csv.x", "lora_harness.report.view"}


def test_the_checker_skips_type_checking_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lora_harness.run.harness import Harness\n")
    assert imported_modules(module) == {"typing", "typing.TYPE_CHECKING"}


def test_plugin_modules_load_in_an_order_pytest_can_rewrite(tmp_path: Path) -> None:
    """pytest marks each `pytest_plugins` module for assertion rewriting just before importing it; a module
    an earlier one already imported gets "Module already imported so cannot be rewritten" in every run."""
    import subprocess
    import sys

    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::pytest.PytestAssertRewriteWarning", "test_one.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
