"""``python -m nexa_gateway``: run the gateway with uvicorn, configured from the environment."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from nexa import logs
from nexa_gateway.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m nexa_gateway", description="Run the Nexa gateway.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    try:
        Settings()
    except ValidationError as exc:
        # Name each bad variable in one line apiece, not as a traceback.
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            print(f"nexa gateway: invalid setting NEXA_{field.upper()}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        # One format for the gateway's lines and uvicorn's (NEXA_LOG_FORMAT: text or json).
        logs.configure("gateway", args.log_level)
    except ValueError as exc:
        print(f"nexa gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        "nexa_gateway.main:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
