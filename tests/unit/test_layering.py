"""The layers import one way (docs/architecture.md): the core never imports the orchestrator or
the tracker; only tasks/tracking/ talks to MLflow; the server's registry path loads no Prefect."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trustflow

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def _offenders(folder: Path, forbidden: set[str], allowed: Path | None = None) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted(folder.rglob("*.py"))
        if allowed is None or not path.is_relative_to(allowed)
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    ]


def test_core_imports_neither_prefect_nor_mlflow() -> None:
    root = Path(trustflow.__file__).parent
    assert list(root.rglob("*.py")), "no core modules found"
    assert _offenders(root, {"prefect", "mlflow"}) == []


def test_only_tasks_tracking_imports_mlflow() -> None:
    tracking = ROOT / "tasks" / "tracking"
    for folder in (ROOT / "tasks", ROOT / "flows"):
        assert _offenders(folder, {"mlflow"}, allowed=tracking) == []


def test_serving_from_the_registry_loads_neither_prefect_nor_matplotlib() -> None:
    """What `trustflow serve --model models:/...` imports: the CLI, the server, the registry
    source and the store's configuration."""
    probe = (
        "import sys; import flows.cli, flows.serve, tasks.tracking.source, tasks.tracking.store; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'matplotlib'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_nothing_chooses_a_matplotlib_backend_at_import() -> None:
    """Figures are built with matplotlib's object API, which needs no backend."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("src/trustflow", "tasks", "flows")
        for path in (ROOT / folder).rglob("*.py")
        if "matplotlib.use(" in path.read_text()
    ]
    assert offenders == []
