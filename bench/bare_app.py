"""The benchmark peer: a bare FastAPI app whose JSON routes do no work.

It runs under exactly the uvicorn settings of ``python -m nexa_gateway`` (one
process, uvicorn's automatic loop and HTTP choices, no access log), so the
gateway/bare ratio isolates what the gateway adds on top of FastAPI itself.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI


def create_app() -> FastAPI:
    """A FastAPI app with one JSON GET and one JSON POST route, both answering at once."""
    app = FastAPI(title="bare")

    @app.get("/items/{item_id}")
    async def read_item(item_id: str) -> dict[str, Any]:
        return {"item_id": item_id, "status": "pending"}

    @app.post("/items", status_code=201)
    async def create_item(body: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": "item_1", "status": "pending", "fields": len(body)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description="Run the bare peer app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    # Mirrors nexa_gateway/__main__.py: same factory style, loop, HTTP parser and logging.
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
