"""Logging for every Nexa process: one schema, readable text in a terminal, JSON lines for machines.

``configure(service)`` sets up the root logger of a process (gateway, worker, operator, engine pod,
serving process). The format comes from ``NEXA_LOG_FORMAT``: ``text`` (the default: what a person at
a terminal reads) or ``json`` (one object per line, what the Helm chart sets for every pod, so a log
pipeline indexes fields instead of parsing prose). Both carry the same fields: time, level, logger,
service, message, and — inside ``log_context(job_id=…, attempt=…)`` — the job, attempt, pipeline and
trace the line belongs to, so one job's lines can be found across the gateway, its worker and its pod.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

ENV_FORMAT = "NEXA_LOG_FORMAT"
FORMATS = ("text", "json")
# The context fields a line may carry, in the order the text format shows them.
CONTEXT_FIELDS = ("job_id", "attempt", "pipeline_id", "trace_id")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("nexa_log_context", default={})  # noqa: B039 (never mutated: replaced whole)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Lines logged in this block (this thread or task) carry ``fields`` (None values are left out)."""
    known = {k: v for k, v in fields.items() if k in CONTEXT_FIELDS and v is not None}
    token = _context.set({**_context.get(), **known})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``service``, ``message``, the context
    fields that are set, and ``exception`` (the formatted traceback) when there is one."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        line.update(_context.get())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-07 10:00:00,123 INFO nexa.worker [job_… #1]: message`` (the context only when set)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(nexa_context)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = _context.get()
        parts = [str(fields["job_id"])] if "job_id" in fields else []
        if "attempt" in fields:
            parts.append(f"#{fields['attempt']}")
        if "pipeline_id" in fields:
            parts.append(str(fields["pipeline_id"]))
        record.nexa_context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def log_format(value: str | None = None) -> str:
    """``text`` or ``json``, from ``value`` or ``NEXA_LOG_FORMAT``; anything else is an error naming it."""
    chosen = (value if value is not None else os.environ.get(ENV_FORMAT, "text")).strip().lower() or "text"
    if chosen not in FORMATS:
        raise ValueError(f"{ENV_FORMAT}={chosen!r}: use one of {', '.join(FORMATS)}")
    return chosen


def configure(
    service: str,
    level: int | str = logging.INFO,
    *,
    fmt: str | None = None,
    stream: TextIO | None = None,
    force: bool = False,
) -> logging.Handler | None:
    """Route the process's logging (the root logger) to ``stream`` (stderr) in the chosen format and
    return the handler. As ``logging.basicConfig``: a root logger someone else already set up (an
    application embedding Nexa, a test runner) is left alone and None returned, unless ``force``;
    a handler of an earlier ``configure`` is replaced. The format is checked either way."""
    chosen = log_format(fmt)
    root = logging.getLogger()
    theirs = [h for h in root.handlers if not getattr(h, "nexa_handler", False)]
    if theirs and not force:
        return None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.nexa_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
