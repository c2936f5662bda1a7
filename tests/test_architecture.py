"""The code's shape: imports run one way, and the project package holds only its configuration."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each package may import those after it, never those before it.
LAYERS = ["linebot_site", "conversations", "models_registry", "core"]


def imports_of(path: Path) -> set[str]:
    """The top-level packages a module imports (relative imports stay inside its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def backward_imports(root: Path) -> list[str]:
    problems = []
    for rank, package in enumerate(LAYERS):
        for path in sorted((root / package).rglob("*.py")):
            for imported in sorted(imports_of(path) & set(LAYERS[:rank])):
                problems.append(f"{path.relative_to(root)} imports {imported}")
    return problems


def test_imports_run_one_way():
    assert backward_imports(ROOT) == []


def test_the_check_sees_a_backward_import(tmp_path):
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "core" / "bad.py").write_text("from conversations.models import Chat\nimport models_registry.x\n")
    (tmp_path / "conversations" / "fine.py").write_text("from core import audit\nfrom . import models\n")
    assert backward_imports(tmp_path) == ["core/bad.py imports conversations", "core/bad.py imports models_registry"]


def test_the_project_package_holds_only_configuration():
    modules = {path.name for path in (ROOT / "linebot_site").glob("*.py")}
    assert modules <= {"__init__.py", "settings.py", "urls.py", "wsgi.py", "asgi.py"}
