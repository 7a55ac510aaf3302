"""A JSON answer sent straight through ASGI, for middleware that replies before the app runs."""

from __future__ import annotations

from starlette.types import Send


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
