"""The ingestion service's shortcuts for `track` calls give the answers of its general path (ADR 0005, decision 12).

Pure logic: parsed calls and a catalogue filled by hand, no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from accounts.models import EntityType
from accounts.services import PropertyCatalog
from plgapp.models import Tenant
from signals.calls import AccountRef, AddUsers, Call, MemberChange, Track, UpsertUser, UserRef, parse_properties
from signals.journy import parse_call
from signals.services import _catalog_keys, _type_errors, _widen

NOW = datetime(2026, 11, 20, 14, tzinfo=UTC)


def _track(metadata: dict[str, object]) -> Track:
    call = parse_call(
        "track",
        {"identification": {"user": {"userId": "u1"}}, "name": "Report created", "metadata": metadata},
        now=NOW,
    )
    assert isinstance(call, Track)
    return call


def _catalog(**event_types: str) -> PropertyCatalog:
    catalog = PropertyCatalog(Tenant(pk=1, name="t", slug="t"))
    for key, kind in event_types.items():
        catalog._know((EntityType.EVENT, key), kind)
    return catalog


def _general_type_errors(catalog: PropertyCatalog, call: Track) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """The general path, as for every other kind of call: the call's properties as a plain dict."""
    plain = Track(name=call.name, at=call.at, user=call.user, account=call.account, properties=dict(call.properties))
    return _type_errors(catalog, plain)


def test_an_event_whose_key_types_are_known_is_accepted_as_on_the_general_path() -> None:
    catalog = _catalog(plan="text", seats="number", trial="boolean")
    call = _track({"plan": "pro", "seats": 3, "trial": True})
    assert _type_errors(catalog, call) == _general_type_errors(catalog, call) == ({}, {})


def test_a_type_clash_and_a_new_key_take_the_general_path() -> None:
    catalog = _catalog(plan="text", seats="number")
    clash = _track({"plan": "pro", "seats": "three"})
    errors, new = _type_errors(catalog, clash)
    assert errors == {"metadata.seats": "is a number property of events; got a text value"}
    assert (errors, new) == _general_type_errors(catalog, clash)
    fresh = _track({"plan": "pro", "color": "blue"})
    assert _type_errors(catalog, fresh) == ({}, {(EntityType.EVENT, "color"): "text"})
    assert _type_errors(_catalog(), fresh) == _general_type_errors(_catalog(), fresh)


def test_catalogue_keys_are_those_of_every_call_by_entity_type() -> None:
    at = NOW
    calls: list[tuple[int, Call]] = [
        (0, _track({"plan": "pro", "Seats": 3})),
        (1, _track({"plan": "team", "color": "red"})),
        (2, UpsertUser(user=UserRef(external_id="u1"), at=at, properties=parse_properties({"plan": "x"}, "p"))),
        (
            3,
            AddUsers(
                account=AccountRef(external_id="a1"),
                users=(MemberChange(user=UserRef(external_id="u1"), properties={"role": "admin"}),),
                at=at,
            ),
        ),
    ]
    assert _catalog_keys(calls) == {
        (EntityType.EVENT, "plan"),
        (EntityType.EVENT, "seats"),
        (EntityType.EVENT, "color"),
        (EntityType.USER, "plan"),
        (EntityType.MEMBERSHIP, "role"),
    }


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(-10_000, 10_000)), min_size=1, max_size=30))
def test_widen_keeps_each_entitys_first_and_last_event_time(events: list[tuple[int, int]]) -> None:
    spans: dict[int, tuple[datetime, datetime]] = {}
    for pk, seconds in events:
        _widen(spans, pk, NOW + timedelta(seconds=seconds))
    expected = {}
    for pk in {pk for pk, _ in events}:
        times = [NOW + timedelta(seconds=seconds) for other, seconds in events if other == pk]
        expected[pk] = (min(times), max(times))
    assert spans == expected
