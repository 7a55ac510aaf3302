"""The console's client of the public REST API: the gateway app itself, called in-process.

Every request carries the signed-in user's own API key, so the console can do exactly what that key
can do with ``curl`` and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp


@dataclass(frozen=True)
class Answer:
    """One API answer: the status, the decoded JSON body, and the error message as the API wrote it."""

    status: int
    body: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The API's own error message (``{"error": {"message": …}}``), else the raw body."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
            field = error.get("field")
            return f"{message} (field: {field})" if field and str(field) not in message else message
        return self.text[:2000] or f"HTTP {self.status}"


class PublicApi:
    """``await api.call("GET", "/v1/jobs")`` against ``app`` with ``api_key``; use as an async context."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://nexa-console.internal",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60.0,
        )

    async def __aenter__(self) -> PublicApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        r = await self._http.request(method, path, params=params, json=json, headers=headers)
        try:
            body = r.json() if r.content and "json" in r.headers.get("content-type", "") else None
        except ValueError:
            body = None
        return Answer(status=r.status_code, body=body, text=r.text)
