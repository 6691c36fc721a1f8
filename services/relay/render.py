"""How a customer's message reads in the operators' chat: who wrote (name and masked number),
then what they sent, every WhatsApp message type made readable as text (media go as media,
their caption under the same header)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.localization import N_, render
from services.masking import mask_phone

MEDIA_KINDS = ("image", "document", "audio", "video", "sticker")
MAPS_URL = "https://maps.google.com/?q={latitude},{longitude}"


def header(language: str, name: str | None, phone: str | None, channel: str) -> str:
    """"💬 Ann Lee · +•••••••••78 (WhatsApp)": the customer, never their full number."""
    who = (name or "").strip() or render(language, N_("Unnamed customer"))
    if channel == "whatsapp" and phone:
        return f"💬 {who} · {mask_phone(phone)} (WhatsApp)"
    return f"💬 {who} (Telegram)"


def topic_title(name: str | None, phone: str | None) -> str:
    """A forum topic's name for a customer (Telegram allows 128 characters)."""
    who = (name or "").strip() or "?"
    return (f"{who} · {mask_phone(phone)}" if phone else who)[:128]


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def describe(language: str, kind: str, payload: Mapping[str, Any], text: str | None) -> str:
    """The message as text: a text's body, a location with a map link, contact cards, the
    button or list entry picked, a reaction; a caption for media; a notice for the rest."""
    if kind == "text":
        return _text(_get(payload.get("text"), "body")) or _text(text)
    if kind in MEDIA_KINDS:
        return _text(_get(payload.get(kind), "caption"))
    if kind == "location":
        location = payload.get("location")
        latitude, longitude = _get(location, "latitude"), _get(location, "longitude")
        place = ", ".join(p for p in (_text(_get(location, "name")),
                                      _text(_get(location, "address"))) if p)
        lines = ["📍 " + render(language, N_("Location")) + (f": {place}" if place else "")]
        if latitude is not None and longitude is not None:
            lines.append(MAPS_URL.format(latitude=latitude, longitude=longitude))
        return "\n".join(lines)
    if kind == "contacts":
        lines = []
        for card in payload.get("contacts") or []:
            name = _text(_get(_get(card, "name"), "formatted_name")) or "?"
            phones = [_text(_get(p, "phone")) for p in _get(card, "phones") or []]
            lines.append("👤 " + render(language, N_("Contact")) + f": {name}"
                         + (f", {', '.join(p for p in phones if p)}" if any(phones) else ""))
        return "\n".join(lines) or "👤 " + render(language, N_("Contact"))
    if kind == "interactive":
        interactive = payload.get("interactive")
        reply_type = _text(_get(interactive, "type"))
        reply = _get(interactive, reply_type)
        title = _text(_get(reply, "title")) or _text(_get(reply, "id"))
        description = _text(_get(reply, "description"))
        chosen = render(language, N_("Chose: {title}"), title=title)
        return chosen + (f" ({description})" if description else "")
    if kind == "button":
        button = payload.get("button")
        label = _text(_get(button, "text")) or _text(_get(button, "payload"))
        return render(language, N_("Tapped: {label}"), label=label)
    if kind == "reaction":
        emoji = _text(_get(payload.get("reaction"), "emoji"))
        if not emoji:
            return render(language, N_("Removed a reaction"))
        return render(language, N_("Reacted {emoji} to a message"), emoji=emoji)
    return render(language, N_("[a {kind} message the relay cannot show]"), kind=kind)


def media_kind(kind: str, payload: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(kind, media fields) of a WhatsApp media message: its id, mime type, file name, and
    whether an audio is a voice note; None for other messages or one without an id."""
    if kind not in MEDIA_KINDS:
        return None
    media = payload.get(kind)
    media_id = _text(_get(media, "id"))
    if not media_id:
        return None
    mime = _text(_get(media, "mime_type"))
    extension = {"image/png": "png", "image/webp": "webp", "audio/ogg": "ogg",
                 "audio/mpeg": "mp3", "video/mp4": "mp4", "application/pdf": "pdf"}.get(
        mime.split(";")[0], {"image": "jpg", "sticker": "webp", "video": "mp4",
                             "audio": "ogg"}.get(kind, "bin"))
    filename = _text(_get(media, "filename")) or f"{kind}.{extension}"
    fields: dict[str, Any] = {"media_id": media_id, "mime_type": mime, "filename": filename[:128]}
    if kind == "audio" and (_get(media, "voice") or mime.startswith("audio/ogg")):
        fields["voice"] = True
    return kind, fields
