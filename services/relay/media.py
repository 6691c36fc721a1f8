"""WhatsApp media through the Graph API: a customer's file fetched for the operators, an
operator's file uploaded for the customer.

Fetching is two requests (https://developers.facebook.com/docs/whatsapp/cloud-api/reference/media):
`GET /{media-id}` answers the file's url, mime_type and file_size (a string in some of Meta's
examples, a number in others: both are read), then the url is downloaded with the same bearer
token; the url is valid for 5 minutes, so it is asked for afresh on every try. A file larger
than WhatsApp allows for its kind, or than a bot may upload to Telegram, is refused before it is
downloaded (and a download that turns out larger is cut off). Uploading is `POST
/{phone-number-id}/media`, multipart with messaging_product, type and file; the answer's id
is what a message then sends.

Every failure is a `MediaError` with a reason a person can read and whether trying again may
help (network trouble, 5xx, 429) or not (gone, too large, refused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

MB = 1024 * 1024
# WhatsApp's largest file per kind (Meta's supported media types).
WHATSAPP_LIMITS = {
    "image": 5 * MB, "audio": 16 * MB, "video": 16 * MB, "document": 100 * MB,
    "sticker": 500 * 1024,
}
# What a bot may upload to Telegram: photos 10 MB, other files 50 MB.
TELEGRAM_LIMITS = {"image": 10 * MB}
TELEGRAM_FILE_LIMIT = 50 * MB


def relay_limit(kind: str) -> int:
    """The largest file of `kind` that can go from WhatsApp to Telegram."""
    return min(WHATSAPP_LIMITS.get(kind, 100 * MB), TELEGRAM_LIMITS.get(kind, TELEGRAM_FILE_LIMIT))


class MediaError(Exception):
    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Downloaded:
    data: bytes
    mime_type: str


def _size(value: Any) -> int | None:
    """file_size as Meta sends it: "303833" or 303833."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


class WhatsAppMedia:
    def __init__(
        self,
        *,
        token: str | None,
        phone_number_ids: Sequence[str],
        api_base: str = "https://graph.facebook.com",
        api_version: str = "v23.0",
        timeout: float = 60.0,
    ) -> None:
        self.token = token
        self.phone_number_ids = tuple(p for p in phone_number_ids if p)
        self.api_base = api_base.rstrip("/")
        self.api_version = api_version.strip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @staticmethod
    def _failed(status: int, body: Any) -> MediaError:
        error = body.get("error") if isinstance(body, Mapping) else None
        message = str(error.get("message")) if isinstance(error, Mapping) else ""
        transient = status >= 500 or status == 429
        return MediaError(f"HTTP {status}" + (f": {message[:200]}" if message else ""),
                          transient=transient)

    async def fetch(self, media_id: str, kind: str) -> Downloaded:
        """The file behind a webhook's media id; MediaError when it cannot be had."""
        if not self.enabled:
            raise MediaError("WhatsApp is not configured (WHATSAPP_TOKEN)", transient=False)
        limit = relay_limit(kind)
        url = f"{self.api_base}/{self.api_version}/{media_id}"
        try:
            async with self._client().get(url, headers=self._headers()) as response:
                try:
                    meta = await response.json(content_type=None)
                except ValueError:
                    meta = None
                if response.status != 200 or not isinstance(meta, Mapping):
                    raise self._failed(response.status, meta)
            download = meta.get("url")
            if not isinstance(download, str) or not download:
                raise MediaError("the Graph API gave no download URL", transient=True)
            size = _size(meta.get("file_size"))
            if size is not None and size > limit:
                raise MediaError(f"too large ({_megabytes(size)}; at most "
                                 f"{_megabytes(limit)} for {kind})", transient=False)
            async with self._client().get(download, headers=self._headers()) as response:
                if response.status != 200:
                    raise self._failed(response.status, None)
                data = await response.content.read(limit + 1)
                if len(data) > limit:
                    raise MediaError(f"too large (over {_megabytes(limit)} for {kind})",
                                     transient=False)
                mime = str(meta.get("mime_type") or response.content_type or "")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MediaError(f"network error ({type(exc).__name__})", transient=True) from exc
        return Downloaded(data, mime)

    async def upload(
        self, data: bytes, *, mime_type: str, filename: str, phone_number_id: str | None = None
    ) -> str:
        """Upload a file for sending; returns its media id."""
        if not self.enabled or not self.phone_number_ids:
            raise MediaError("WhatsApp is not configured", transient=False)
        sender = phone_number_id if phone_number_id in self.phone_number_ids \
            else self.phone_number_ids[0]
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", mime_type)
        form.add_field("file", data, filename=filename, content_type=mime_type)
        url = f"{self.api_base}/{self.api_version}/{sender}/media"
        try:
            async with self._client().post(url, data=form, headers=self._headers()) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                if response.status != 200 or not isinstance(body, Mapping) or not body.get("id"):
                    raise self._failed(response.status, body)
                return str(body["id"])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MediaError(f"network error ({type(exc).__name__})", transient=True) from exc
