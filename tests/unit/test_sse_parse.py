"""The SSE parser: WHATWG field rules, and chunk boundaries never change the events."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nexa.sse import ServerSentEvent, SSEParser


def parse_all(*chunks: str) -> tuple[list[ServerSentEvent], SSEParser]:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


def test_log_event_with_id_and_type() -> None:
    events, parser = parse_all('id: 7\nevent: log\ndata: {"seq": 7}\n\n')
    assert events == [ServerSentEvent(event="log", data='{"seq": 7}', id="7")]
    assert parser.last_event_id == "7"


def test_multi_line_data_is_joined_with_newlines() -> None:
    events, _ = parse_all("data: first\ndata:second\ndata:  third\n\n")
    # Exactly one leading space is stripped; a value without one is kept as is.
    assert events == [ServerSentEvent(data="first\nsecond\n third")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    events, _ = parse_all(": keepalive\nfoo: bar\ndata: x\n\n:another\n\n")
    assert events == [ServerSentEvent(data="x")]


def test_crlf_and_cr_line_ends() -> None:
    events, _ = parse_all("data: a\r\n\r\ndata: b\r\rdata: c\n\n")
    assert [e.data for e in events] == ["a", "b", "c"]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    events, _ = parse_all("data: a\r", "\ndata: b\r", "\n\r", "\n")
    assert events == [ServerSentEvent(data="a\nb")]


def test_block_without_data_is_not_dispatched_but_sets_id() -> None:
    events, parser = parse_all("id: 3\nevent: log\n\ndata: x\n\n")
    assert events == [ServerSentEvent(event="message", data="x", id="3")]
    assert parser.last_event_id == "3"


def test_empty_data_line_dispatches_empty_event() -> None:
    events, _ = parse_all("event: end\ndata\n\n")
    assert events == [ServerSentEvent(event="end", data="")]


def test_retry_field_only_accepts_digits() -> None:
    _, parser = parse_all("retry: 2500\n\nretry: soon\n\n")
    assert parser.retry == 2500


def test_id_with_nul_is_ignored() -> None:
    _, parser = parse_all("id: 1\n\nid: 2\x003\n\n")
    assert parser.last_event_id == "1"


def test_leading_bom_is_stripped_even_when_split() -> None:
    events, _ = parse_all("\ufeff", "data: x\n\n")
    assert events == [ServerSentEvent(data="x")]
    events, _ = parse_all("\ufeffdata: y\n\n")
    assert events == [ServerSentEvent(data="y")]


def test_event_cut_before_its_blank_line_is_never_dispatched() -> None:
    events, parser = parse_all('id: 1\nevent: log\ndata: {"seq": 1}\n\nid: 2\nevent: log\ndata: {"se')
    assert [e.id for e in events] == ["1"]
    # The id line of the cut event was read, but no event carrying it was handed out.
    assert parser.last_event_id == "2"


# ---- property: any chunking gives the same events as one big chunk

field_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00\ufeff"), max_size=20)
event_strategy = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.integers(0, 10**6).map(str)),
        "event": st.one_of(st.none(), st.sampled_from(["log", "end", "message", "x y"])),
        "data": st.lists(field_text, min_size=1, max_size=4),
        "comment": st.one_of(st.none(), field_text),
    }
)


def serialize(events: list[dict[str, object]], line_end: str) -> str:
    out: list[str] = []
    for event in events:
        if event["comment"] is not None:
            out.append(f":{event['comment']}{line_end}")
        if event["id"] is not None:
            out.append(f"id: {event['id']}{line_end}")
        if event["event"] is not None:
            out.append(f"event: {event['event']}{line_end}")
        for line in event["data"]:  # type: ignore[attr-defined]
            out.append(f"data: {line}{line_end}")
        out.append(line_end)
    return "".join(out)


def expected(events: list[dict[str, object]]) -> list[ServerSentEvent]:
    result: list[ServerSentEvent] = []
    last_id: str | None = None
    for event in events:
        if event["id"] is not None:
            last_id = str(event["id"])
        result.append(
            ServerSentEvent(
                event=str(event["event"] or "message"),
                data="\n".join(event["data"]),  # type: ignore[arg-type]
                id=last_id,
            )
        )
    return result


@given(
    events=st.lists(event_strategy, max_size=6),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_chunk_boundaries_never_change_events(
    events: list[dict[str, object]], line_end: str, cuts: list[int]
) -> None:
    text = serialize(events, line_end)
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    chunked, _ = parse_all(*chunks)
    whole, _ = parse_all(text)
    assert chunked == whole == expected(events)


@given(st.text(max_size=200), st.lists(st.integers(0, 400), max_size=8))
def test_arbitrary_input_never_raises_and_chunking_agrees(text: str, cuts: list[int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert parse_all(*chunks)[0] == parse_all(text)[0]
