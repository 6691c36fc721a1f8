"""The relay between customers (WhatsApp, or Telegram's /support) and the operators' chat."""

from services.relay.media import MediaError, WhatsAppMedia
from services.relay.service import (
    KIND_MEDIA,
    KIND_REPLY,
    KIND_TEXT,
    NotAllowed,
    OperatorFile,
    Relay,
    RelayConfig,
    Reply,
    ReplyOutcome,
)

__all__ = [
    "KIND_MEDIA", "KIND_REPLY", "KIND_TEXT", "MediaError", "NotAllowed", "OperatorFile",
    "Relay", "RelayConfig", "Reply", "ReplyOutcome", "WhatsAppMedia",
]
