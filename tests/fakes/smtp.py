"""A real SMTP server (aiosmtpd) on loopback that keeps what it accepts, for e-mail tests.

It can refuse chosen recipients with a reply of our choice (e.g. "550 5.1.1 No such user"),
the way a real mail server refuses them at RCPT time.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """An aiosmtpd handler that keeps what it accepts and refuses some recipients."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]


@asynccontextmanager
async def smtp_server(handler: Mailbox | None = None) -> AsyncIterator[tuple[Mailbox, int]]:
    """Start aiosmtpd on a free loopback port; yields (mailbox, port)."""
    mailbox = handler or Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        yield mailbox, port
    finally:
        await asyncio.to_thread(controller.stop)
