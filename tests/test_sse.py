"""SSE wire encoding, as an EventSource reads it."""

from __future__ import annotations

import pytest

from chat.streams import sse
from helpers.sse import parse_sse


def test_an_event_carries_its_id_name_and_every_data_line():
    text = sse.encode("delta", "<p>one</p>\n<p>two</p>", "17-2")
    assert text == "id: 17-2\nevent: delta\ndata: <p>one</p>\ndata: <p>two</p>\n\n"
    [event] = parse_sse(iter(text.split("\n")))
    assert (event.id, event.event, event.data) == ("17-2", "delta", "<p>one</p>\n<p>two</p>")


def test_comments_and_retry_are_not_events():
    text = sse.comment() + sse.retry(1000) + sse.encode("finish", "{}", "1-1")
    assert sse.retry(1000) == "retry: 1000\n\n"
    assert [e.event for e in parse_sse(iter(text.split("\n")))] == ["finish"]


@pytest.mark.parametrize(
    "raw, cursor", [(None, None), ("", None), ("  ", None), ("1700-3", (1700, 3)), (" 5-0 ", (5, 0))]
)
def test_last_event_id_parses_to_a_cursor(raw, cursor):
    assert sse.parse_event_id(raw) == cursor


@pytest.mark.parametrize("raw", ["abc", "1700", "1-2-3", "-1-2", "1" * 21 + "-0"])
def test_an_id_this_server_never_sent_is_refused_with_a_message(raw):
    with pytest.raises(ValueError, match="is not an event id this server sent"):
        sse.parse_event_id(raw)


def test_a_cursor_formats_back_to_the_id_it_came_from():
    assert sse.format_event_id(sse.parse_event_id("1700-3")) == "1700-3"
