"""The start-up log: what this process runs on, in a few INFO lines, once everything is up.

An operator reading the journal (or a container's log) after a start sees the database and its
schema revision, where the conversation state lives, how updates arrive, which delivery channels
are on and which are off for lack of which settings, and where the web app listens. Every URL is
shown with its password masked (services.masking.mask_url), before the log formatter masks the
line again.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.delivery import missing_channel_settings
from bot.webhooks import TELEGRAM_PATH
from database.migrate import current_revision, head_revision
from services.masking import mask_url

log = logging.getLogger("bot.startup")

TELEGRAM_PRODUCTION_API = "https://api.telegram.org"


def startup_lines(
    settings: Settings,
    *,
    revision: str | None,
    head: str | None,
    listening: str,
    public_base_url: str,
) -> list[str]:
    """The lines of the start-up log. `listening` is the address the web server is bound to
    (http://host:port, the port actually bound), `public_base_url` where it is reached from
    outside."""
    if revision == head:
        schema = f"schema revision {revision} (the newest)"
    else:
        schema = f"schema revision {revision or 'none'} (the newest is {head})"
    lines = [f"database: {mask_url(settings.database_url)}, {schema}"]

    if settings.redis_url:
        lines.append(f"FSM storage: Redis at {mask_url(settings.redis_url)}")
    else:
        lines.append("FSM storage: the database (table fsm_states); REDIS_URL is not set")

    api = mask_url(settings.telegram_api_base) or TELEGRAM_PRODUCTION_API
    if settings.telegram_mode == "webhook":
        lines.append(
            f"Telegram updates: webhook, posted by Telegram to {public_base_url}{TELEGRAM_PATH} "
            f"(Bot API at {api})"
        )
    else:
        lines.append(f"Telegram updates: polling (Bot API at {api})")

    missing = missing_channel_settings(settings)
    on = [name for name, lacking in missing.items() if not lacking]
    off = [f"{name} (set {', '.join(lacking)})" for name, lacking in missing.items() if lacking]
    channels = f"delivery channels on: {', '.join(on)}"
    if off:
        channels += f"; off: {'; '.join(off)}"
    if not settings.dispatcher_enabled:
        channels += "; this process does not send them (DISPATCHER_ENABLED is false)"
    lines.append(channels)

    # "web server listening on <url>" ends at the first space: scripts read the address there.
    lines.append(f"web server listening on {listening} (public base URL {public_base_url})")
    return lines


async def log_startup(
    settings: Settings, engine: AsyncEngine, *, listening: str, public_base_url: str
) -> None:
    """Log the start-up lines; the schema revision is read from the database (alembic_version)."""
    lines = startup_lines(
        settings,
        revision=await current_revision(engine),
        head=head_revision(),
        listening=listening,
        public_base_url=public_base_url,
    )
    for line in lines:
        log.info("%s", line)
