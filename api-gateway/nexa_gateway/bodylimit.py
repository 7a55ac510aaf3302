"""A cap on request bodies, applied before anything parses them.

Without it a 100 MB JSON body is read and parsed in full before validation can
refuse it. Uploads (datasets, worker artifacts) stream to disk under limits of
their own and are let through here.
"""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexa_gateway.errors import error_body
from nexa_gateway.rawresponse import send_json

# (method, path) pairs whose routes enforce a larger limit of their own while streaming.
_STREAMED = (
    ("POST", re.compile(r"^/v1/datasets/?$")),
    ("POST", re.compile(r"^/v1/models/?$")),
    ("PUT", re.compile(r"^/v1/workers/jobs/[^/]+/store/artifacts/[^/]+$")),
)


class _TooLarge(StarletteHTTPException):
    """Raised while the body is read; an HTTP exception, so the app answers it as a 413 (not a 400/500)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the {limit}-byte limit")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _exempt(self, scope: Scope) -> bool:
        method, path = scope.get("method", ""), scope.get("path", "")
        return any(method == m and pattern.match(path) for m, pattern in _STREAMED)

    async def _refuse(self, send: Send) -> None:
        message = f"request body exceeds the {self.limit}-byte limit"
        await send_json(send, 413, json.dumps(error_body("payload_too_large", message, "body")).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # a chunked body that did not say its size
                    raise _TooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send)
