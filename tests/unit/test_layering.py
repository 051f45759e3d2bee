"""The core never imports the orchestrator or the tracker (docs/architecture.md)."""

import ast
from pathlib import Path

import trustflow

FORBIDDEN = {"prefect", "mlflow"}


def test_core_imports_neither_prefect_nor_mlflow() -> None:
    root = Path(trustflow.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert list(root.rglob("*.py")), "no core modules found"
    assert offenders == []
