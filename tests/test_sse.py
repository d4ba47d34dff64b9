"""The incremental SSE parser and writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.relay.sse import SSEEvent, SSEParser, format_sse

WIRE = Path(__file__).parent / "wire"
RECORDED = (WIRE / "anthropic_stream_tool_use.sse").read_bytes()


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_event_name_and_data_are_parsed() -> None:
    """A named event with one data line comes back as one event."""
    assert parse(b"event: ping\ndata: {}\n\n") == [SSEEvent("ping", "{}")]


def test_data_lines_are_joined_with_newlines() -> None:
    """Several data lines form one payload joined by newlines, without a trailing newline."""
    assert parse(b"data: a\ndata: b\ndata:\n\n") == [SSEEvent("message", "a\nb\n")]


def test_event_name_defaults_to_message() -> None:
    """An event without an `event:` field is named `message`."""
    assert parse(b"data: x\n\n")[0].event == "message"


def test_only_one_leading_space_is_removed() -> None:
    """The single space after the colon is syntax; further spaces are data."""
    assert parse(b"data:  two\ndata:none\n\n")[0].data == " two\nnone"


def test_field_without_colon_has_empty_value() -> None:
    """A bare `data` line contributes an empty line and still dispatches."""
    assert parse(b"data\n\n") == [SSEEvent("message", "")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    """Comment lines, `retry` and unknown fields do not reach the event."""
    events = parse(b": keep-alive\nretry: 10\nfoo: bar\ndata: x\n\n")
    assert events == [SSEEvent("message", "x")]


def test_blank_line_without_data_dispatches_nothing() -> None:
    """A block holding only an event name or a comment is not an event."""
    assert parse(b": hi\n\nevent: lonely\n\ndata: y\n\n") == [SSEEvent("message", "y")]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    """The event name is reset after each dispatch."""
    events = parse(b"event: first\ndata: 1\n\ndata: 2\n\n")
    assert [e.event for e in events] == ["first", "message"]


def test_last_event_id_persists_until_replaced() -> None:
    """The id applies to later events too, and an id containing NUL is ignored."""
    events = parse(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\0\ndata: c\n\nid: 9\ndata: d\n\n")
    assert [e.id for e in events] == ["7", "7", "7", "9"]


def test_crlf_cr_and_lf_line_endings_are_all_accepted() -> None:
    """Every SSE line terminator ends a line, mixed in one stream."""
    events = parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")
    assert [e.data for e in events] == ["a", "b", "c"]


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    """A CR ending one chunk and an LF starting the next are a single line ending."""
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("message", "a\nb")]


def test_cr_at_chunk_end_followed_by_data_is_a_line_break() -> None:
    """A lone CR at the end of a chunk ends the line even when no LF follows."""
    assert parse(b"data: a\r", b"data: b\r\r") == [SSEEvent("message", "a\nb")]


def test_multibyte_character_split_across_chunks_survives() -> None:
    """UTF-8 is decoded per complete line, so a split character is not mangled."""
    payload = "data: héllo — 你好\n\n".encode()
    cut = payload.index("你".encode()) + 1
    assert parse(payload[:cut], payload[cut:])[0].data == "héllo — 你好"


def test_byte_order_mark_is_stripped_even_when_split() -> None:
    """A UTF-8 BOM at the very start of the stream is not part of the first field name."""
    assert parse(b"\xef\xbb", b"\xbfevent: e\ndata: x\n\n") == [SSEEvent("e", "x")]


def test_event_without_terminating_blank_line_is_not_dispatched() -> None:
    """An event still pending when input stops is held back, as the spec requires."""
    assert parse(b"data: partial\n") == []


def test_recorded_stream_has_the_expected_events() -> None:
    """The recorded Anthropic stream yields its 14 events in order, ping included."""
    events = parse(RECORDED)
    assert len(events) == 14
    assert events[0].event == "message_start"
    assert events[2] == SSEEvent("ping", '{"type": "ping"}')
    assert events[-1] == SSEEvent("message_stop", '{"type":"message_stop"}')


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_recorded_stream_split_at_every_byte_boundary(eol: bytes) -> None:
    """Cutting the recorded stream in two at any byte gives the same events as one chunk."""
    stream = RECORDED.replace(b"\n", eol)
    expected = parse(RECORDED)
    for cut in range(len(stream) + 1):
        assert parse(stream[:cut], stream[cut:]) == expected, f"cut at byte {cut}"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_recorded_stream_fed_one_byte_at_a_time(eol: bytes) -> None:
    """Feeding single bytes gives the same events as one chunk."""
    stream = RECORDED.replace(b"\n", eol)
    assert parse(*(stream[i : i + 1] for i in range(len(stream)))) == parse(RECORDED)


def test_format_sse_writes_data_only_events() -> None:
    """Without a name an event is one `data:` line and a blank line."""
    assert format_sse('{"a":1}') == b'data: {"a":1}\n\n'


def test_format_sse_writes_named_multiline_events() -> None:
    """A name comes first, and each data line gets its own `data:` field."""
    assert format_sse("a\nb\r\nc", event="x") == b"event: x\ndata: a\ndata: b\ndata: c\n\n"


def test_format_sse_round_trips_through_the_parser() -> None:
    """What the writer produces, the parser reads back unchanged (newlines normalised)."""
    assert parse(format_sse("one\ntwo", event="e")) == [SSEEvent("e", "one\ntwo")]


def test_format_sse_refuses_a_line_break_in_the_event_name() -> None:
    """An event name with a newline would inject fields, so it is refused."""
    with pytest.raises(ValueError, match="line break"):
        format_sse("x", event="a\ndata: evil")
