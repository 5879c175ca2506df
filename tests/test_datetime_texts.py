"""Date-time texts in calls (timestamps, property values): the fast path for SDKs' UTC texts reads every text
exactly as the general path does, and turns away the same ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signals.calls import _parse_datetime_general, parse_datetime

# hypothesis wants naive bounds; the instants it makes are in UTC
INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(INSTANTS, st.sampled_from(["seconds", "milliseconds", "microseconds"]))
def test_sdk_utc_texts_read_as_the_general_path_reads_them(at: datetime, timespec: str) -> None:
    text = at.isoformat(timespec=timespec).replace("+00:00", "Z")
    parsed = parse_datetime(text)
    assert parsed == _parse_datetime_general(text)
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)
    assert parsed == at.replace(microsecond=parsed.microsecond)


@given(st.text(alphabet="0123456789-T:.Z +", min_size=18, max_size=28))
def test_any_text_shaped_almost_like_a_timestamp_gets_the_general_answer(text: str) -> None:
    assert parse_datetime(text) == _parse_datetime_general(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-30T10:00:00Z",  # no such day
        "2026-01-01T25:00:00Z",
        "0000-01-01T00:00:00Z",  # year 0
        "2026-01-01T10:00:00.12Z",  # two decimals: the general path decides
        "2026-01-01T10:00:00,123Z",
        "2026-01-01 10:00:00.123Z",
        "2026-01-01T10:00:00.123Z\n",
        "2026-01-01T10:00:00.123+00:00",
        "2026-01-01T10:00:00.123456789Z",
    ],
)
def test_edge_texts_get_the_general_answer(text: str) -> None:
    assert parse_datetime(text) == _parse_datetime_general(text)
