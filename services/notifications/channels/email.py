"""The e-mail fallback: one plain-text UTF-8 message per notification part, over SMTP (aiosmtplib).

The Message-ID is derived from the notification's idempotency key (and part), so a resend after
an ambiguous failure carries the same id and mail systems and clients can drop the duplicate.
SMTP replies are classified by classify.classify_smtp (4xx transient, 5xx permanent, 535 broken).
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from services.notifications.channels.base import (
    ChannelName,
    Outgoing,
    Recipient,
    SendResult,
    render_text,
)
from services.notifications.classify import classify_smtp
from services.notifications.failures import ChannelError, Failure, FailureClass

PROVIDER = "smtp"
DEFAULT_SUBJECT = "Notification"


def message_id(idempotency_key: str, part: int, sender: str) -> str:
    """A stable Message-ID for one part of one notification: <hash.part@sender's domain>."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = sender.rsplit("@", 1)[-1].strip("<> ") if "@" in sender else "localhost"
    return f"<{digest}.{part}@{domain}>"


class EmailChannel:
    name = ChannelName.EMAIL
    max_text_length = 100_000

    def __init__(
        self,
        host: str | None,
        port: int,
        sender: str | None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        timeout: float = 15,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.sender)

    def can_reach(self, recipient: Recipient) -> bool:
        return bool(recipient.email)

    async def close(self) -> None:
        """Nothing held open: each send is one SMTP session (fallback volumes are small)."""

    def build(self, recipient: Recipient, message: Outgoing) -> EmailMessage:
        """The e-mail for one part of a notification."""
        sender = str(self.sender)
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = str(recipient.email)
        subject = message.subject or DEFAULT_SUBJECT
        if message.part:
            subject = f"{subject} ({message.part + 1})"
        mail["Subject"] = subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = message_id(message.idempotency_key, message.part, sender)
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        mail.set_content(render_text(message), charset="utf-8")
        return mail

    async def send(self, recipient: Recipient, message: Outgoing) -> SendResult:
        if not self.enabled:
            raise ChannelError(
                Failure(FailureClass.BROKEN, PROVIDER, "not_configured", "SMTP is not configured")
            )
        if not recipient.email:
            raise ChannelError(Failure(FailureClass.PERMANENT, PROVIDER, "no_address", "no e-mail"))
        if not render_text(message):
            raise ChannelError(
                Failure(FailureClass.PERMANENT, PROVIDER, "empty", "nothing to send")
            )
        mail = self.build(recipient, message)
        implicit_tls = self.port == 465  # SMTPS; STARTTLS on submission (587) and others
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=implicit_tls,
                start_tls=self.starttls and not implicit_tls,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            raise ChannelError(classify_smtp(exc)) from exc
        return SendResult(
            provider_message_id=mail["Message-ID"],
            sender=self.sender,
            address=recipient.email,
        )
