"""The condition language of playbooks (DESIGN §8): parse JSON, evaluate one loaded entity. Pure (no Django).

    {"all": [COND, ...]}   {"any": [COND, ...]}   {"not": COND}
    {"field": FIELD, "op": OP, "value": LITERAL}
    {"event": NAME, "of": "account" | "user" | "membership", "within_days": N, "op": OP, "value": NUMBER}

Fields
    account.external_id | domain | name | stage (text) · account.stage_changed_at | created_at (datetime)
    account.properties.<key> · account.score.conversion | churn (number) · account.activation (number 0..1)
    user.external_id | email | stage (text) · user.first_seen_at | last_seen_at (datetime)
    user.properties.<key> · user.score.health (number)
    membership.<key> (relationship property, e.g. membership.role) · membership.score.champion (number)
    membership.joined_at (datetime)
    A membership condition reads the user *in that account*: account.* is the membership's account, user.* its
    user. `membership.joined_at` and `membership.score.<kind>` are the builtin and the score; every other
    `membership.<key>` is the relationship property <key>.

Operators: eq, neq, in, not_in, gt, gte, lt, lte, contains, starts_with, exists, not_exists,
within_last_days, more_than_days_ago. Event tests take eq, neq, gt, gte, lt, lte and a number.

Semantics — the contract of both backends (this evaluator and playbooks.compiler, the SQL one)
    1. Two-valued logic. Every leaf is True or False, never unknown; `all` is True when every item is (an empty
       `all` is True), `any` when one is (an empty `any` is False), `not` is plain negation.
    2. Kinds. A value is text, number, boolean, list, datetime, or missing. Builtins have fixed kinds (see
       above); a builtin text that is empty ("") is missing. A property's kind is the JSON type of its stored
       value (string -> text, number -> number, true/false -> boolean, array -> list); JSON null, an absent key,
       an object, a number beyond ±1e300 are missing. Booleans are never numbers. Scores are numbers; a
       missing score row is missing. `account.activation` is the number under "activation" in the details of
       the account's conversion score, else of its churn score, else missing.
    3. Missing and mismatched values. A leaf on a missing value is False, except `not_exists`, which is True
       exactly when the value is missing. A value whose kind does not fit the operator and literal counts as
       missing for that leaf — so `neq` and `not_in` are True only for a present value of the literal's kind
       that differs ("plan neq Pro" is False when plan is absent or a number).
    4. eq / neq / in / not_in compare with the literal's kind: text exactly (case-sensitive), numbers as IEEE
       doubles, booleans as booleans. in/not_in literals are non-empty lists of one kind. Datetimes are not
       compared with these (the validator refuses them).
    5. gt / gte / lt / lte: a number literal compares numbers; a text literal must be an ISO-8601 date or
       datetime ("2025-01-31" is midnight UTC; no offset means UTC) and compares datetimes as instants.
    6. Datetimes are builtin datetimes and property texts written as `YYYY-MM-DD[T ]hh:mm[:ss[.fraction]]`
       with an optional `Z` or `±hh:mm` / `±hhmm` offset (hours 00-14) — the shape ingestion types as
       datetime, except offsets beyond ±14h (no zone has them; PostgreSQL refuses some). A fraction is cut to
       microseconds; no offset means UTC; an impossible date (Feb 30) is not a datetime. Builtin texts are never
       datetimes.
    7. contains: the literal is a text; on a text, substring; on a list, some element is that exact text.
       starts_with: exact prefix of a text (lists do not start with anything). The empty text is a substring
       and a prefix of every text.
    8. within_last_days N (a number of days, fractions allowed): now - N days <= t <= now.
       more_than_days_ago N: t < now - N days. `now` is given by the caller (an aware datetime).
    9. Event tests count the events named `event` of the account (every event with that account), of the user
       (in any account), or of the membership (the user's events in that account), over the daily rollups of
       UTC days `today - within_days < day <= today` (today = now's UTC date, so within_days 1 is today
       only; days after today never count); a missing count is 0. The count compares as a number.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

Json = typing.Any

OPS = (
    "eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "starts_with", "exists", "not_exists",
    "within_last_days", "more_than_days_ago",
)  # fmt: skip
EVENT_OPS = ("eq", "neq", "gt", "gte", "lt", "lte")
ORDER_OPS = ("gt", "gte", "lt", "lte")
RELATIVE_OPS = ("within_last_days", "more_than_days_ago")
PRESENCE_OPS = ("exists", "not_exists")
ENTITIES = ("account", "user", "membership")

# Builtin fields and their kinds. account.activation reads the account scores' details (see the docstring).
BUILTINS: dict[str, dict[str, str]] = {
    "account": {
        "external_id": "text", "domain": "text", "name": "text", "stage": "text",
        "stage_changed_at": "datetime", "created_at": "datetime", "activation": "number",
    },
    "user": {
        "external_id": "text", "email": "text", "stage": "text", "first_seen_at": "datetime",
        "last_seen_at": "datetime",
    },
    "membership": {"joined_at": "datetime"},
}  # fmt: skip
SCORES: dict[str, tuple[str, ...]] = {
    "account": ("conversion", "churn"),
    "user": ("health",),
    "membership": ("champion",),
}

MAX_WITHIN_DAYS = 365  # event windows (rollups older than a year are not read)
MAX_RELATIVE_DAYS = 36_500
MAX_DEPTH = 10
MAX_LEAVES = 200
NUMBER_LIMIT = 1e300  # a property number beyond this counts as missing (no double can hold it in SQL)

# Property texts that are datetimes (semantics 6). One source for Python (fullmatch) and SQL (`~ '^…$'`):
# plain groups, [0-9] (never \d, which means other digits in both engines), no anchors here.
DATETIME_PATTERN = (
    "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[T ]([01][0-9]|2[0-3]):[0-5][0-9]"
    "(:[0-5][0-9](\\.[0-9]+)?)?(Z|[+-](0[0-9]|1[0-4]):?[0-5][0-9])?"
)
FRACTION_BEYOND_MICROSECONDS = "(\\.[0-9]{6})[0-9]+"  # replaced by its first group (cut to microseconds)
_DATETIME = re.compile(DATETIME_PATTERN)
_FRACTION = re.compile(FRACTION_BEYOND_MICROSECONDS)
_DATE_ONLY = re.compile("[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ConditionInvalid(ValueError):
    """A condition that is not well-formed; `errors` maps paths ("all.2.any.0.op", "" for the root) to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path or 'condition'}: {message}" for path, message in errors.items()))
        self.errors = errors


# --- the parsed form -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class All:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Any:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class FieldTest:
    """`value` is the JSON literal (a list becomes a tuple); None for exists / not_exists."""

    field: str
    op: str
    value: Json = None


@dataclass(frozen=True)
class EventTest:
    event: str
    of: str
    within_days: int
    op: str
    value: int | float


Condition = All | Any | Not | FieldTest | EventTest
Leaf = FieldTest | EventTest


@dataclass(frozen=True)
class FieldRef:
    """A resolved field: `entity` account|user|membership, `source` builtin|property|score, and `name` (the
    builtin, the property key or the score kind)."""

    entity: str
    source: str
    name: str

    @property
    def builtin_kind(self) -> str | None:
        """The fixed kind of a builtin or score ("text", "number", "datetime"); None for a property."""
        if self.source == "builtin":
            return BUILTINS[self.entity][self.name]
        return "number" if self.source == "score" else None


def field_ref(name: str) -> FieldRef:
    """Resolve a field name; ValueError with a readable message when it names nothing."""
    entity, _, rest = name.partition(".")
    if entity not in ENTITIES or not rest:
        raise ValueError(f"{name!r} is not a field: fields start with account., user. or membership.")
    if rest in BUILTINS[entity]:
        return FieldRef(entity, "builtin", rest)
    if rest.startswith("score."):
        kind = rest.removeprefix("score.")
        if kind not in SCORES[entity]:
            raise ValueError(f"{entity} scores are {', '.join(SCORES[entity])}, not {kind!r}")
        return FieldRef(entity, "score", kind)
    if entity == "membership":
        return FieldRef(entity, "property", rest)  # membership.<key>: the relationship property
    if rest.startswith("properties.") and rest != "properties.":
        return FieldRef(entity, "property", rest.removeprefix("properties."))
    builtins = ", ".join(BUILTINS[entity])
    raise ValueError(
        f"{name!r} is not a field: use {entity}.properties.<key>, {entity}.score.<kind> or one of {builtins}"
    )


# --- parsing ---------------------------------------------------------------------------------------------


def parse(raw: Json) -> Condition:
    """The parsed condition, or ConditionInvalid with every structural mistake by path."""
    parsed = parse_collect(raw)
    if parsed.errors or parsed.condition is None:
        raise ConditionInvalid(parsed.errors or {"": "is not a condition"})
    return parsed.condition


@dataclass(frozen=True)
class Parsed:
    """A parse that goes on after mistakes: the condition (None if anything is wrong), the errors by path, and
    every well-formed leaf with its path (what the catalogue validator checks further)."""

    condition: Condition | None
    errors: dict[str, str]
    leaves: list[tuple[str, Leaf]] = field(default_factory=list)


def parse_collect(raw: Json) -> Parsed:
    errors: dict[str, str] = {}
    leaves: list[tuple[str, Leaf]] = []
    condition = _parse(raw, "", 0, errors, leaves)
    if len(leaves) > MAX_LEAVES:
        errors[""] = f"has more than {MAX_LEAVES} tests"
    return Parsed(condition if not errors else None, errors, leaves)


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


# What people write for an operator -> the operator.
OP_SYNONYMS = {
    "=": "eq", "==": "eq", "is": "eq", "equals": "eq", "!=": "neq", "<>": "neq", "is_not": "neq", "not_equals": "neq",
    ">": "gt", "greater": "gt", "greater_than": "gt", ">=": "gte", "<": "lt", "less": "lt", "less_than": "lt",
    "<=": "lte", "has": "contains", "includes": "contains", "startswith": "starts_with", "is_set": "exists",
    "is_not_set": "not_exists", "not_in_list": "not_in", "one_of": "in",
}  # fmt: skip


def _suggest_op(word: str) -> str:
    close = [OP_SYNONYMS[word]] if word in OP_SYNONYMS else difflib.get_close_matches(word, OPS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _parse(
    raw: Json, path: str, depth: int, errors: dict[str, str], leaves: list[tuple[str, Leaf]]
) -> Condition | None:
    if depth > MAX_DEPTH:
        errors[path] = f"nests more than {MAX_DEPTH} levels deep"
        return None
    if not isinstance(raw, dict):
        errors[path] = 'is a condition: an object with "all", "any", "not", "field" or "event"'
        return None
    groups = [key for key in ("all", "any", "not") if key in raw]
    if groups:
        if len(raw) != 1:
            errors[path] = f'"{groups[0]}" stands alone in its object (found: {", ".join(sorted(raw))})'
            return None
        key = groups[0]
        if key == "not":
            item = _parse(raw["not"], _join(path, "not"), depth + 1, errors, leaves)
            return Not(item) if item is not None else None
        items_raw = raw[key]
        if not isinstance(items_raw, list):
            errors[_join(path, key)] = "is a list of conditions"
            return None
        items = [
            _parse(item, _join(_join(path, key), n), depth + 1, errors, leaves) for n, item in enumerate(items_raw)
        ]
        if any(item is None for item in items):
            return None
        parsed_items = tuple(item for item in items if item is not None)
        return All(parsed_items) if key == "all" else Any(parsed_items)
    if "event" in raw:
        return _parse_event(raw, path, errors, leaves)
    if "field" in raw:
        return _parse_field(raw, path, errors, leaves)
    errors[path] = 'is a condition: an object with "all", "any", "not", "field" or "event"'
    return None


def is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scalar_kind(value: Json) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _parse_field(
    raw: dict[str, Json], path: str, errors: dict[str, str], leaves: list[tuple[str, Leaf]]
) -> Leaf | None:
    before = len(errors)
    unknown = set(raw) - {"field", "op", "value"}
    if unknown:
        errors[path] = f"unknown keys: {', '.join(sorted(unknown))} (a field test has field, op and value)"
    name = raw.get("field")
    if not isinstance(name, str):
        errors[_join(path, "field")] = "is a field name such as account.stage"
    else:
        try:
            field_ref(name)
        except ValueError as exc:
            errors[_join(path, "field")] = str(exc)
    op = raw.get("op")
    if op not in OPS:
        errors[_join(path, "op")] = f"{op!r} is not an operator{_suggest_op(str(op))}: one of {', '.join(OPS)}"
    else:
        message = literal_error(op, raw.get("value"), "value" in raw)
        if message:
            errors[_join(path, "value")] = message
    if len(errors) > before:
        return None
    value = raw.get("value")
    leaf = FieldTest(field=str(name), op=str(op), value=tuple(value) if isinstance(value, list) else value)
    leaves.append((path, leaf))
    return leaf


def literal_error(op: str, value: Json, given: bool) -> str | None:
    """What is wrong with the literal of `op`, whatever the field (the catalogue checks the field's type)."""
    if op in PRESENCE_OPS:
        return f"{op} takes no value" if value is not None else None
    if not given or value is None:
        return f"{op} needs a value"
    if op in ("eq", "neq"):
        return None if scalar_kind(value) else "is a text, a number, true or false"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return f'{op} needs a non-empty list, e.g. ["Admin", "Owner"]'
        kinds = {scalar_kind(item) for item in value}
        if None in kinds or len(kinds) != 1:
            return "is a list of texts, or of numbers, or of true/false (one kind)"
        return None
    if op in ORDER_OPS:
        if is_number(value) or (isinstance(value, str) and literal_datetime(value) is not None):
            return None
        return f'{op} needs a number or an ISO date, e.g. 0.75 or "2025-01-31"'
    if op in ("contains", "starts_with"):
        return None if isinstance(value, str) else f"{op} needs a text"
    if op in RELATIVE_OPS:
        if is_number(value) and 0 <= value <= MAX_RELATIVE_DAYS:
            return None
        return f"{op} needs a number of days from 0 to {MAX_RELATIVE_DAYS}"
    return None


def _parse_event(
    raw: dict[str, Json], path: str, errors: dict[str, str], leaves: list[tuple[str, Leaf]]
) -> Leaf | None:
    before = len(errors)
    unknown = set(raw) - {"event", "of", "within_days", "op", "value"}
    if unknown:
        errors[path] = (
            f"unknown keys: {', '.join(sorted(unknown))} (an event test has event, of, within_days, op, value)"
        )
    event = raw.get("event")
    if not isinstance(event, str) or not event or len(event) > 255:
        errors[_join(path, "event")] = "is the name of an event (1-255 characters)"
    of = raw.get("of")
    if of not in ENTITIES:
        errors[_join(path, "of")] = (
            'is "account" (any user\'s events in it), "user" or "membership" (the user in that account)'
        )
    days = raw.get("within_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_WITHIN_DAYS:
        errors[_join(path, "within_days")] = f"is a whole number of days from 1 to {MAX_WITHIN_DAYS} (1 = today)"
    op = raw.get("op")
    if op not in EVENT_OPS:
        errors[_join(path, "op")] = f"{op!r} does not compare a count: use one of {', '.join(EVENT_OPS)}"
    value = raw.get("value")
    if not is_number(value):
        errors[_join(path, "value")] = "is a number of events"
    if len(errors) > before:
        return None
    leaf = EventTest(event=str(event), of=str(of), within_days=int(raw["within_days"]), op=str(op), value=raw["value"])
    leaves.append((path, leaf))
    return leaf


def to_json(condition: Condition) -> Json:
    """The JSON form of a parsed condition (parse(to_json(c)) == c)."""
    match condition:
        case All(items):
            return {"all": [to_json(item) for item in items]}
        case Any(items):
            return {"any": [to_json(item) for item in items]}
        case Not(item):
            return {"not": to_json(item)}
        case FieldTest(name, op, value):
            if op in PRESENCE_OPS:
                return {"field": name, "op": op}
            return {"field": name, "op": op, "value": list(value) if isinstance(value, tuple) else value}
        case EventTest(event, of, days, op, value):
            return {"event": event, "of": of, "within_days": days, "op": op, "value": value}
    raise TypeError(f"not a condition: {condition!r}")


def iter_leaves(condition: Condition) -> Iterator[Leaf]:
    match condition:
        case All(items) | Any(items):
            for item in items:
                yield from iter_leaves(item)
        case Not(item):
            yield from iter_leaves(item)
        case FieldTest() | EventTest():
            yield condition


def fields_read(condition: Condition) -> set[str]:
    """What a condition reads: field names as written ("account.stage", "membership.role", "user.score.health")
    and events as "event:<of>.<name>" ("event:account.widget_created") — so the first dotted part always names
    the entity family whose change can move the result."""
    read: set[str] = set()
    for leaf in iter_leaves(condition):
        read.add(leaf.field if isinstance(leaf, FieldTest) else f"event:{leaf.of}.{leaf.event}")
    return read


def entities_read(condition: Condition) -> set[str]:
    """account / user / membership: whose fields or events the condition reads."""
    return {leaf.of if isinstance(leaf, EventTest) else field_ref(leaf.field).entity for leaf in iter_leaves(condition)}


# Builtins that an event can move with no other change: ingestion widens a user's seen times with each of its
# events, and account.activation lives in the details of the scores, which every event re-computes.
MOVED_BY_ANY_EVENT = frozenset({"user.first_seen_at", "user.last_seen_at", "account.activation"})


def events_read(condition: Condition) -> frozenset[str] | None:
    """The event names whose events (new, moved or deleted) can change the result when nothing else about the
    entity changes; None when any event can: the condition reads a score (every event re-scores its account and
    user), activation or a seen time."""
    names: set[str] = set()
    for leaf in iter_leaves(condition):
        if isinstance(leaf, EventTest):
            names.add(leaf.event)
        elif leaf.field in MOVED_BY_ANY_EVENT or field_ref(leaf.field).source == "score":
            return None
    return frozenset(names)


def reads_scores(condition: Condition) -> bool:
    """Whether the condition reads what a rescore writes: a score, or activation (kept in the scores' details)."""
    fields = (leaf.field for leaf in iter_leaves(condition) if not isinstance(leaf, EventTest))
    return any(name == "account.activation" or field_ref(name).source == "score" for name in fields)


def reads_time(condition: Condition) -> bool:
    """Whether the result can change with time alone (relative dates, event windows) — sweeps re-check these."""
    return any(isinstance(leaf, EventTest) or leaf.op in RELATIVE_OPS for leaf in iter_leaves(condition))


def event_windows(condition: Condition) -> dict[tuple[str, str], int]:
    """{(of, event name): longest within_days} — what a loader must read of the rollups."""
    windows: dict[tuple[str, str], int] = {}
    for leaf in iter_leaves(condition):
        if isinstance(leaf, EventTest):
            key = (leaf.of, leaf.event)
            windows[key] = max(windows.get(key, 0), leaf.within_days)
    return windows


# --- values ----------------------------------------------------------------------------------------------


def literal_datetime(text: str) -> datetime | None:
    """An ISO-8601 date ("2025-01-31", midnight UTC) or datetime literal (no offset = UTC), or None."""
    text = text.strip()
    try:
        if _DATE_ONLY.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def value_datetime(text: str) -> datetime | None:
    """A property text as a datetime, by the shape of semantics 6 (the SQL backend uses the same pattern)."""
    if not _DATETIME.fullmatch(text):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def number_value(value: Json) -> float | None:
    """A stored JSON number as a double, None when it is not a number (booleans are not) or too large."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > NUMBER_LIMIT:  # exact: an int may exceed any double
        return None
    number = float(value)
    return number if math.isfinite(number) and abs(number) <= NUMBER_LIMIT else None


# --- facts and evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntityFacts:
    """What a condition can read of one account, user or membership.

    builtins    BUILTINS[entity] name -> value: text builtins as str, datetime builtins as aware datetimes,
                account "activation" as a float; None (or an absent name) = missing.
    properties  the stored JSON properties (relationship properties for a membership), as decoded.
    scores      score kind -> value, for the score rows that exist.
    events      event name -> {UTC day: count} from the daily rollups of this entity's level (a membership:
                the pair level); only the days and names a condition needs have to be there.
    """

    builtins: Mapping[str, Json] = field(default_factory=dict)
    properties: Mapping[str, Json] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    events: Mapping[str, Mapping[date, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    """One entity as conditions see it. An account root has `account`; a user root `user`; a membership root all
    three (its account, its user, and itself)."""

    account: EntityFacts | None = None
    user: EntityFacts | None = None
    membership: EntityFacts | None = None

    def of(self, entity: str) -> EntityFacts:
        facts = getattr(self, entity)
        if facts is None:
            raise ValueError(f"the condition reads {entity} data, which these facts do not have")
        return typing.cast(EntityFacts, facts)


def evaluate(condition: Condition, facts: Facts, now: datetime) -> bool:
    """Whether `facts` match `condition` at `now` (an aware datetime), by the semantics of this module."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return _evaluate(condition, facts, now)


def _evaluate(condition: Condition, facts: Facts, now: datetime) -> bool:
    match condition:
        case All(items):
            return all(_evaluate(item, facts, now) for item in items)
        case Any(items):
            return any(_evaluate(item, facts, now) for item in items)
        case Not(item):
            return not _evaluate(item, facts, now)
        case EventTest():
            return _compare_numbers(condition.op, float(event_count(condition, facts, now)), condition.value)
        case FieldTest():
            ref = field_ref(condition.field)
            return test_value(condition.op, condition.value, _read(ref, facts.of(ref.entity)), ref, now)
    raise TypeError(f"not a condition: {condition!r}")


def event_count(test: EventTest, facts: Facts, now: datetime) -> int:
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=test.within_days)
    days = facts.of(test.of).events.get(test.event, {})
    return sum(count for day, count in days.items() if first < day <= today)


def _read(ref: FieldRef, facts: EntityFacts) -> Json:
    if ref.source == "builtin":
        return facts.builtins.get(ref.name)
    if ref.source == "score":
        return facts.scores.get(ref.name)
    return facts.properties.get(ref.name)


def kind_of(value: Json, ref: FieldRef) -> str | None:
    """The kind of a read value (semantics 2); None = missing."""
    if value is None:
        return None
    if ref.source != "property":
        kind = ref.builtin_kind
        if kind == "text":
            return "text" if isinstance(value, str) and value != "" else None
        if kind == "number":
            return "number" if number_value(value) is not None else None
        return "datetime" if isinstance(value, datetime) else None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if number_value(value) is not None else None
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    return None


def _as_datetime(value: Json, kind: str | None, ref: FieldRef) -> datetime | None:
    """Builtin datetimes, and property texts of the datetime shape (builtin texts never are datetimes)."""
    if kind == "datetime":
        return typing.cast(datetime, value)
    if kind == "text" and ref.source == "property":
        return value_datetime(typing.cast(str, value))
    return None


def _compare_numbers(op: str, left: float, right: float) -> bool:
    right = float(right)
    return {
        "eq": left == right, "neq": left != right, "gt": left > right, "gte": left >= right,
        "lt": left < right, "lte": left <= right,
    }[op]  # fmt: skip


def _same(kind: str, left: Json, right: Json) -> bool:
    if kind == "number":
        return float(left) == float(right)
    return bool(left == right)


def test_value(op: str, literal: Json, value: Json, ref: FieldRef, now: datetime) -> bool:
    """One field leaf on a read value (semantics 2-8)."""
    kind = kind_of(value, ref)
    if op == "exists":
        return kind is not None
    if op == "not_exists":
        return kind is None
    if kind is None:
        return False
    if op in ("eq", "neq"):
        if scalar_kind(literal) != kind:
            return False
        return _same(kind, value, literal) == (op == "eq")
    if op in ("in", "not_in"):
        items = tuple(literal)
        if scalar_kind(items[0]) != kind:
            return False
        return any(_same(kind, value, item) for item in items) == (op == "in")
    if op in ORDER_OPS:
        if is_number(literal):
            return kind == "number" and _compare_numbers(op, float(value), literal)
        bound = literal_datetime(literal)
        moment = _as_datetime(value, kind, ref)
        if bound is None or moment is None:
            return False
        return {"gt": moment > bound, "gte": moment >= bound, "lt": moment < bound, "lte": moment <= bound}[op]
    if op == "contains":
        if kind == "text":
            return bool(literal in value)
        if kind == "list":
            return any(isinstance(item, str) and item == literal for item in value)
        return False
    if op == "starts_with":
        return kind == "text" and bool(value.startswith(literal))
    if op in RELATIVE_OPS:
        moment = _as_datetime(value, kind, ref)
        if moment is None:
            return False
        bound = now - timedelta(days=literal)
        return bound <= moment <= now if op == "within_last_days" else moment < bound
    raise ValueError(f"unknown operator {op!r}")
