"""deploy/service-desk-bot.service: a unit systemd accepts (`systemd-analyze verify`, with its
paths rewritten to this checkout), that runs the bot as a user other than root, and gives the
bot's graceful shutdown the time it may take before systemd kills it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "service-desk-bot.service"
INSTALLED = "/opt/service-desk-bot"  # where the unit expects the checkout
ENV_FILE = "/etc/service-desk-bot/env"
# Stages of bot.app.shutdown each bounded by SHUTDOWN_TIMEOUT_SECONDS, one after another:
# running handlers, the scheduler's jobs, the notification dispatcher, the inbound worker.
SHUTDOWN_STAGES = 4


def _settings(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, flags=re.MULTILINE)


def _default(name: str) -> object:
    return Settings.model_fields[name].default


def test_unit_runs_the_checkouts_bot_as_a_user_other_than_root() -> None:
    unit = UNIT.read_text()
    [user] = _settings(unit, "User")
    assert user not in ("", "root", "0")
    assert _settings(unit, "WorkingDirectory") == [INSTALLED]
    assert _settings(unit, "EnvironmentFile") == [ENV_FILE]
    assert _settings(unit, "ExecStart") == [f"{INSTALLED}/.venv/bin/python main.py run"]
    assert _settings(unit, "Restart") == ["on-failure"]
    assert _settings(unit, "KillSignal") == ["SIGTERM"]
    # The SQLite default (data/bot.db) is the one place it writes.
    assert _settings(unit, "ProtectSystem") == ["strict"]
    assert _settings(unit, "ReadWritePaths") == [f"{INSTALLED}/data"]
    # The port it documents is the bot's own default.
    assert f"WEB_PORT={_default('web_port')}" in _settings(unit, "Environment")


def test_stop_timeout_outlasts_the_graceful_shutdown() -> None:
    [value] = _settings(UNIT.read_text(), "TimeoutStopSec")
    assert re.fullmatch(r"\d+s?", value), f"TimeoutStopSec={value}: write plain seconds"
    stop_timeout = int(value.rstrip("s"))
    shutdown = float(_default("shutdown_timeout_seconds"))  # type: ignore[arg-type]
    assert stop_timeout > SHUTDOWN_STAGES * shutdown, (
        f"TimeoutStopSec={stop_timeout} leaves no margin over {SHUTDOWN_STAGES} x "
        f"SHUTDOWN_TIMEOUT_SECONDS ({shutdown:g} s): systemd would kill the bot mid-shutdown"
    )


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed: the service unit is not verified",
)
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("BOT_TOKEN=1:fake\n")
    unit = (
        UNIT.read_text()
        .replace(ENV_FILE, str(env_file))
        .replace(INSTALLED, str(ROOT))
    )
    # systemd-analyze checks the program exists and is executable (this checkout's venv), not
    # that the user exists: User= stays as it is.
    assert (ROOT / ".venv" / "bin" / "python").exists()
    copy = tmp_path / UNIT.name
    copy.write_text(unit)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    said = [
        line for line in (done.stdout + done.stderr).splitlines()
        if UNIT.name in line or UNIT.stem in line
    ]
    # verify exits 0 even for unknown keys and bad values: it only prints them.
    assert done.returncode == 0, done.stdout + done.stderr
    assert said == [], "\n".join(said)
