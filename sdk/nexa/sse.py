"""An incremental parser for ``text/event-stream`` (server-sent events).

Pure: feed it text in chunks of any size and it returns the events completed so
far. Where the chunk boundaries fall never changes the events. Follows the
WHATWG rules: ``id``/``event``/``data``/``retry`` fields, multi-line data,
``:`` comments, LF, CR and CRLF line ends (a CRLF may be split across chunks),
a leading byte-order mark, and an event is only dispatched at a blank line, so
a stream cut mid-event never yields half an event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["SSEParser", "ServerSentEvent"]

_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_BOM: Final = "\ufeff"


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event; ``id`` is the stream's last event id when it was dispatched."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Turns chunks of an event stream into ``ServerSentEvent`` objects."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        # A chunk that ends in CR may be the first half of a CRLF: remember it so a
        # leading LF in the next chunk is not read as a second, empty line.
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._last_event_id: str | None = None
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The most recent ``id`` field seen (what to send as ``Last-Event-ID`` on reconnect)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The reconnection delay in milliseconds the server asked for, if any."""
        return self._retry

    def feed(self, chunk: str) -> list[ServerSentEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        if not chunk:
            return []
        if not self._started:
            self._buffer += chunk
            if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
                return []
            chunk, self._buffer = self._buffer.removeprefix(_BOM), ""
            self._started = True
            if not chunk:
                return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk.startswith("\n"):
                chunk = chunk[1:]
        text = self._buffer + chunk
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(text):
            if match.group() == "\r" and match.end() == len(text):
                self._pending_cr = True
            event = self._process_line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = text[start:]
        return events

    def _process_line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event=event or "message", data="\n".join(data), id=self._last_event_id)
