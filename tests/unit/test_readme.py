"""The README and the design page stay true to the checkout they ship in.

- Every relative link leads to a file or folder of the repository, never outside it.
- Every repository path they name in code (`services/masking.py`, `bot/app.py:build_dispatcher`)
  exists, so a renamed module cannot leave the docs pointing at nothing.
- Every command they show runs the project's virtualenv: `./dev ...` or `.venv/bin/python ...`.
  A bare `python main.py` or `python -m pytest` runs whatever Python the shell finds first,
  which has none of the pinned packages.

These read the files only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/architecture.md", "benchmarks/README.md")

# Top-level folders of the repository: a code span starting with one of them names a path in it.
# (`data/`, `.venv/` and `test-output/` are made at run time, not shipped.)
REPOSITORY_FOLDERS = frozenset({
    ".ci", "benchmarks", "bot", "database", "deploy", "docs", "handlers", "middlewares",
    "services", "tests",
})

_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?(?::[A-Za-z_][A-Za-z0-9_.]*)?$")
# `python main.py ...`, `python3 -m X`: not preceded by a path (`.venv/bin/python`) or a name.
_BARE_PYTHON = re.compile(r"(?<![\w./$-])python3?(?:\s+-\w+)*\s+(?:main\.py\b|-m\s+(?!venv\b)\S)")
# Tools the virtualenv installs, run bare as a command (after any VAR=value assignments).
_BARE_TOOL = re.compile(
    r"(?:^|[;&|(]\s*)(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
    r"(pytest|alembic|ruff|lint-imports|pybabel)\s+\S"
)


@dataclass(frozen=True)
class Code:
    """A piece of code in a document: a line of a fenced block, or an inline span."""

    text: str
    line: int
    fenced: bool


@dataclass(frozen=True)
class Document:
    path: Path
    prose: str  # the text outside fenced blocks, inline spans included
    prose_lines: tuple[int, ...]  # document line number of each prose line
    code: tuple[Code, ...]

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


def parse(path: Path) -> Document:
    """Fenced blocks line by line; inline spans of the prose (a span may cross a line break)."""
    prose: list[str] = []
    prose_lines: list[int] = []
    code: list[Code] = []
    fence: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            code.append(Code(line, number, fenced=True))
        else:
            prose.append(line)
            prose_lines.append(number)
    text = "\n".join(prose)
    for match in _SPAN.finditer(text):
        line = prose_lines[text.count("\n", 0, match.start())]
        code.append(Code(" ".join(match.group(2).split()), line, fenced=False))
    return Document(path, text, tuple(prose_lines), tuple(code))


def links(document: Document) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link outside code."""
    text = _SPAN.sub(lambda m: " " * len(m.group(0)), document.prose)  # keep offsets
    return [
        (document.prose_lines[text.count("\n", 0, m.start())], m.group(1))
        for m in _LINK.finditer(text)
    ]


def repository_paths(document: Document) -> list[tuple[int, str]]:
    """(line, path) of every inline span that names a path of the repository."""
    found = []
    for code in document.code:
        if code.fenced or not _PATH.match(code.text):
            continue
        first = code.text.split("/", 1)[0]
        if "/" in code.text and first in REPOSITORY_FOLDERS:
            found.append((code.line, code.text.split(":", 1)[0]))
    return found


def bare_commands(text: str) -> list[str]:
    """What in `text` runs Python or a dev tool without the project's virtualenv."""
    found = [m.group(0) for m in _BARE_PYTHON.finditer(text)]
    found += [m.group(1) for m in _BARE_TOOL.finditer(text)]
    return found


@pytest.fixture(scope="module", params=DOCUMENTS)
def document(request: pytest.FixtureRequest) -> Document:
    return parse(ROOT / request.param)


def test_relative_links_lead_to_files_of_the_repository(document: Document) -> None:
    broken = []
    for line, target in links(document):
        if _SCHEME.match(target) or target.startswith("#"):
            continue
        resolved = (document.path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{document.name}:{line}: {target} leads outside the repository")
        elif not resolved.exists():
            broken.append(f"{document.name}:{line}: {target} does not exist")
    assert broken == []


def test_repository_paths_named_in_code_exist(document: Document) -> None:
    paths = repository_paths(document)
    assert paths, f"no repository path found in {document.name}: is the parser still right?"
    missing = [f"{document.name}:{line}: {path}" for line, path in paths
               if not (ROOT / path).exists()]
    assert missing == []


def test_commands_run_the_projects_virtualenv(document: Document) -> None:
    offenders = [
        f"{document.name}:{code.line}: {found!r} in {code.text.strip()!r}"
        for code in document.code
        for found in bare_commands(code.text)
    ]
    assert offenders == []


def test_the_readme_links_the_design_in_the_repository() -> None:
    readme = parse(ROOT / "README.md")
    assert "docs/architecture.md" in [target for _, target in links(readme)]
    commands = [code.text for code in readme.code]
    assert "./dev run" in " ".join(commands)  # the scan sees the README's commands


@pytest.mark.parametrize("text", [
    "python main.py migrate",
    "python3 main.py run",
    "python -m pytest -x",
    "python -u -m benchmarks.chaos --quick",
    "BOT_TOKEN=1:fake python -m tests.fakes.telegram --port 8081",
    "cd /srv/bot && python main.py run",
    "pytest tests/unit",
    "DATABASE_URL=sqlite+aiosqlite:///x.db alembic upgrade head",
    "$ ruff check .",
])
def test_a_bare_command_is_found(text: str) -> None:
    assert bare_commands(text)


@pytest.mark.parametrize("text", [
    ".venv/bin/python main.py migrate",
    "./dev test -m process",
    "$VENV/bin/python -m pytest",
    "DATABASE_URL=... .venv/bin/alembic revision --autogenerate -m x",
    ".venv/bin/python -m benchmarks.pacing --quick",
    "python3 -m venv .venv",
    "apt-get install python3-venv",
    "pytest",  # a name in a sentence, not a command line
    "lint-imports",
])
def test_a_command_through_the_virtualenv_passes(text: str) -> None:
    assert bare_commands(text) == []
