"""JSON responses rendered with orjson (fast, and exact for our types)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(content: Any, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers)


class RawJSONResponse(Response):
    """A pre-rendered JSON body with pre-encoded headers: the hot read path
    skips Starlette's per-response header building."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]
