"""What every command shares: the client factory, global options and error rendering.

Each command body runs under ``handle_errors``: every error a user can cause ends
as one red line on stderr and exit code 1 (2 for invalid input), never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, ParamSpec, TypeVar

import pydantic
import typer

from nexa.client import NexaClient
from nexa.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    JobCancelledError,
    JobFailedError,
    NexaError,
    NotFoundError,
    RateLimitError,
    UnprocessableEntityError,
    WaitTimeoutError,
)

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass
class GlobalOptions:
    """``nexa --base-url ... --api-key ...``: overrides for the environment and config file."""

    base_url: str | None = None
    api_key: str | None = None


OPTIONS = GlobalOptions()


class CliError(Exception):
    """An error with the one line to show and the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _make_client() -> NexaClient:
    return NexaClient(api_key=OPTIONS.api_key, base_url=OPTIONS.base_url)


# Tests replace this to hand commands a client backed by a mock transport.
client_factory: Callable[[], NexaClient] = _make_client


def make_client() -> NexaClient:
    """A client configured from global options, then the environment, then ``nexa up``'s config."""
    return client_factory()


def _first_pydantic_error(exc: pydantic.ValidationError) -> str:
    problems = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "invalid input: " + "; ".join(problems) + more


def describe_error(exc: BaseException, base_url: str | None = None) -> tuple[str, int]:
    """The line to print and the exit code for an exception a user can cause."""
    where = f" at {base_url}" if base_url else ""
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, APITimeoutError):
        return f"the Nexa gateway{where} did not answer in time: {exc.message}", EXIT_FAILURE
    if isinstance(exc, APIConnectionError):
        return f"cannot reach the Nexa gateway{where}: is Nexa running? try `nexa up`", EXIT_FAILURE
    if isinstance(exc, AuthenticationError):
        return (
            "the gateway refused the API key (401): check NEXA_API_KEY or --api-key, "
            "or create a key with `nexa keys create`",
            EXIT_FAILURE,
        )
    if isinstance(exc, UnprocessableEntityError | BadRequestError):
        field = f" {exc.field}" if exc.field else ""
        return f"invalid{field}: {exc.message}", EXIT_USAGE
    if isinstance(exc, NotFoundError):
        return f"not found: {exc.message}", EXIT_FAILURE
    if isinstance(exc, RateLimitError):
        wait = f"; retry in {exc.retry_after:.0f} s" if exc.retry_after else ""
        return f"rate limited by the gateway{wait}", EXIT_FAILURE
    if isinstance(exc, ConflictError):
        return f"conflict: {exc.message}", EXIT_FAILURE
    if isinstance(exc, APIStatusError):
        return f"the gateway answered {exc}", EXIT_FAILURE
    if isinstance(exc, JobFailedError | JobCancelledError | WaitTimeoutError | ConfigError | NexaError):
        return exc.message, EXIT_FAILURE
    if isinstance(exc, pydantic.ValidationError):
        return _first_pydantic_error(exc), EXIT_USAGE
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}", EXIT_USAGE
    if isinstance(exc, IsADirectoryError):
        return f"is a directory, not a file: {exc.filename}", EXIT_USAGE
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}", EXIT_FAILURE
    raise exc


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one red line on stderr and exit with ``code``."""
    from nexa.cli.render import print_error

    print_error(message)
    raise typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command body; user-caused errors become one red line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (
            CliError,
            NexaError,
            pydantic.ValidationError,
            FileNotFoundError,
            IsADirectoryError,
            PermissionError,
        ) as exc:
            message, code = describe_error(exc, OPTIONS.base_url or _configured_url())
            fail(message, code)
        except KeyboardInterrupt:
            # Ctrl-C while following a job or a pipeline: it goes on server-side; say so, not a traceback.
            fail("interrupted: anything already submitted goes on (nexa jobs list, nexa pipeline list)", 130)

    return wrapper


def _configured_url() -> str | None:
    try:
        from nexa import config

        return config.resolve(None, None)[0]
    except NexaError:
        return None


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a malformed pair is a usage error naming ``option``."""
    pairs: dict[str, str] = {}
    for raw in values or []:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} expects KEY=VALUE, got {raw!r}", EXIT_USAGE)
        pairs[key.strip()] = value.strip()
    return pairs
