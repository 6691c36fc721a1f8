"""What the fakes' HTTP control interfaces share: the body of a control request."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def control_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 400 with the reason for anything else."""
    try:
        data = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"JSON body expected: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="JSON object expected")
    return data
