"""The import direction of docs/architecture.md holds: the import-linter contracts in pyproject.toml
pass, and the Alembic migrations (a folder import-linter does not scan) import nothing above
database/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from bot.config import DEFAULT_DATABASE_URL

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "database" / "migrations"
ABOVE_DATABASE = {"bot", "handlers", "middlewares", "services"}


def test_the_import_contracts_are_kept() -> None:
    # A process of its own: import-linter's entry point edits sys.path and logging.
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _imported_packages(path: Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


def test_migrations_import_nothing_above_the_database() -> None:
    # No __init__.py there (Alembic loads the files by path), so the contracts cannot see them.
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & ABOVE_DATABASE)
        for path in MIGRATIONS.rglob("*.py")
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_migrations_default_to_the_bots_database() -> None:
    # env.py repeats the default rather than importing bot.config; the two must not drift apart.
    tree = ast.parse((MIGRATIONS / "env.py").read_text(encoding="utf-8"))
    defaults = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "DEFAULT_DATABASE_URL" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert defaults == [DEFAULT_DATABASE_URL]
