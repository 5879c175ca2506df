"""Lists reach PostgreSQL as array literals (plgapp.pgarrays): every value must come back exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import EndUser
from plgapp.pgarrays import array_literal
from tests.conftest import TenantWorld

AWKWARD = ['a"b', "back\\slash", "{braces}", "a,b", " padded ", "", "NULL", "null", "é ✓ 𝄞", "tab\tnew\nline", "'"]


def round_trip(values: list[Any], element_type: str) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{element_type}[]", [array_literal(values)])
        [(back,)] = cursor.fetchall()
    return list(back)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "element_type"),
    [
        ([*AWKWARD, None], "text"),
        ([1, -2, 0, 2**62, None], "bigint"),
        ([1, -2, 0, 2**62], "bigint"),
        (["a,b", "{x}", " pad ", "", "NULL", "é ✓"], "text"),
        (["plain", 'one "quoted"', "plain"], "text"),
        ([True, False, None], "boolean"),
        ([True, False, True], "boolean"),
        ([date(2026, 12, 5), date(1, 1, 1), None], "date"),
        ([0.1, -1.5e300, 5e-324, None], "double precision"),
        ([], "text"),
    ],
    ids=[
        "texts",
        "integers",
        "ids",
        "plain-texts",
        "a-quoted-text",
        "booleans",
        "true-false",
        "dates",
        "floats",
        "empty",
    ],
)
def test_values_come_back_exactly(values: list[Any], element_type: str) -> None:
    assert round_trip(values, element_type) == values


@pytest.mark.django_db
def test_datetimes_keep_their_instant_whatever_their_offset() -> None:
    values = [
        datetime(2026, 12, 5, 18, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 12, 5, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ]
    assert round_trip(values, "timestamptz") == values


@pytest.mark.django_db
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))), max_size=20
    )
)
def test_any_texts_come_back_exactly(values: list[str | None]) -> None:
    assert round_trip(values, "text") == values


def test_lists_of_other_kinds_are_left_to_the_driver() -> None:
    nested: list[Any] = [[1, 2], [3, 4]]
    assert array_literal(nested) is nested
    assert array_literal([{"a": 1}])[0] == {"a": 1}


def test_the_tenant_door_sends_lists_as_literals(tenant_a: TenantWorld) -> None:
    user = EndUser.objects.for_tenant(tenant_a.tenant).create(external_id='x"y\\z')

    with CaptureQueriesContext(connection) as queries:
        rows = EndUser.objects.sql(
            tenant_a.tenant,
            "SELECT id FROM accounts_enduser WHERE tenant_id = %(tenant)s AND external_id = ANY(%(ids)s::text[])",
            {"ids": ['x"y\\z', "other"]},
        )

    assert rows == [(user.pk,)]
    [query] = queries.captured_queries
    assert 'ANY(\'{"x\\"y\\\\z","other"}\'::text[])' in query["sql"]
