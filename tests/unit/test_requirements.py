"""The installed requirements are locks: each package pinned and hashed, compiled from the .in.

requirements*.in hold the top-level pins people edit; `./dev lock` compiles them into
requirements*.txt, which `./dev` installs with `pip install --require-hashes`. These checks read
the files only (no network): a hand-edited or stale lock fails here before an install does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements.txt", "requirements-dev.txt")
SOURCES = {"requirements.in": "requirements.txt", "requirements-dev.in": "requirements-dev.txt"}

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_LOCKED = re.compile(
    rf"^(?P<name>{_NAME})==(?P<version>[A-Za-z0-9.+!_-]+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*$"
)
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
_SOURCE = re.compile(rf"^(?P<name>{_NAME})(?:\[[A-Za-z0-9_,\s.-]+\])?==(?P<version>\S+)$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _logical_lines(path: Path) -> list[str]:
    """The file's requirement lines, continuations joined, comments and blank lines dropped."""
    lines, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    assert not current.strip(), f"{path.name} ends with a continuation"
    return lines


def _lock(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock, asserting each entry is pinned and hashed."""
    name, pins = path.name, {}
    for line in _logical_lines(path):
        requirement, *options = line.split(" --hash=")
        requirement = requirement.strip()
        match = _LOCKED.match(requirement)
        assert match, f"{name}: not an exact `==` pin (or an option hash mode forbids): {line!r}"
        hashes = ["--hash=" + option.strip() for option in options]
        assert hashes, f"{name}: {requirement} has no --hash"
        for digest in hashes:
            assert _HASH.match(digest), f"{name}: {requirement}: malformed hash {digest!r}"
        key = _normalize(match["name"])
        assert key not in pins or match["marker"], f"{name}: {key} is listed twice"
        pins[key] = match["version"]
    return pins


def _sources(path: Path) -> dict[str, str]:
    name, pins = path.name, {}
    for line in _logical_lines(path):
        if line.startswith(("-r ", "-c ")):
            continue
        match = _SOURCE.match(line)
        assert match, f"{name}: top-level requirements are pinned with `==`: {line!r}"
        pins[_normalize(match["name"])] = match["version"]
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_line_of_a_lock_is_pinned_with_a_hash(lock: str) -> None:
    pins = _lock(ROOT / lock)
    assert len(pins) >= 10, f"{lock} lists {len(pins)} packages: not a compiled lock"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_top_level_pin_is_in_its_lock_at_the_same_version(source: str) -> None:
    lock = _lock(ROOT / SOURCES[source])
    wanted = _sources(ROOT / source)
    assert wanted, f"{source} pins nothing"
    wrong = {name: (version, lock.get(name)) for name, version in wanted.items()
             if lock.get(name) != version}
    assert not wrong, f"{source} vs {SOURCES[source]} (want, locked): {wrong}; run ./dev lock"


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions() -> None:
    runtime, dev = _lock(ROOT / "requirements.txt"), _lock(ROOT / "requirements-dev.txt")
    wrong = {name: (version, dev.get(name)) for name, version in runtime.items()
             if dev.get(name) != version}
    assert not wrong, f"requirements-dev.txt differs from requirements.txt: {wrong}; ./dev lock"
    assert (ROOT / "requirements-dev.in").read_text(encoding="utf-8").count("-r requirements.in")


def test_the_checks_refuse_what_hash_mode_refuses(tmp_path: Path) -> None:
    digest = "--hash=sha256:" + "0" * 64
    lock = tmp_path / "requirements.txt"
    for bad in ("aiohttp>=3.14", "aiohttp==3.14.5", "-e .", f"aiohttp \\\n    {digest}",
                "aiohttp==3.14.5 --hash=sha256:abc"):
        lock.write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(AssertionError):
            _lock(lock)
    lock.write_text(f"aiohttp==3.14.5 ; python_version < '4' \\\n    {digest}\n", encoding="utf-8")
    assert _lock(lock) == {"aiohttp": "3.14.5"}
