"""Import boundaries the layout promises: verdicts never import the report package (reports read verdicts)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lora_harness"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


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
    assert imported_modules(module) == {"lora_harness.report.csv", "lora_harness.report.view"}
