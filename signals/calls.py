"""Ingestion calls: parse and validate what SDKs send into plain, typed calls. No Django, no database.

Both front doors (journy.io-compatible and Segment-compatible) turn their JSON into these calls; the
service layer (signals.services.calls_ingest) stores them. Validation here is cheap and per call, so a
bad call in a batch is rejected alone, with a message that says what is wrong and where.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, final

MAX_KEY_LENGTH = 255
MAX_TEXT_LENGTH = 10_000
MAX_LIST_LENGTH = 1_000
MAX_ID_LENGTH = 255
MAX_USERS_PER_CALL = 100
FUTURE_TOLERANCE = timedelta(days=1)
MAX_UTC_OFFSET = timedelta(hours=15, minutes=59)  # PostgreSQL's limit (real zones span -12:00 to +14:00)
ZERO = timedelta(0)

PropertyValue = str | int | float | bool | list[str] | None

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")
_WHITESPACE = re.compile(r"\s+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class CallInvalid(ValueError):
    """A call that cannot be stored; `fields` maps a dotted path to what is wrong there."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in fields.items()))
        self.fields = fields


NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def nul_fields(raw: Any, path: str = "") -> dict[str, str]:
    """Paths of the strings (values or keys) holding a NUL, which PostgreSQL cannot store in text or jsonb."""
    found: dict[str, str] = {}
    if isinstance(raw, str):
        if "\x00" in raw:
            found[path or "body"] = NUL_MESSAGE
    elif isinstance(raw, dict):
        for key, value in raw.items():
            child = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                found[child.replace("\x00", "\\u0000")] = NUL_MESSAGE
            else:
                found.update(nul_fields(value, child))
    elif isinstance(raw, list):
        for n, item in enumerate(raw):
            found.update(nul_fields(item, f"{path}.{n}" if path else str(n)))
    return found


# --- identification -------------------------------------------------------------------------------


# The parsed calls and references are not frozen: an ingestion request builds a couple of hundred of them, and a
# frozen dataclass's __init__ (object.__setattr__ per field) takes three times as long. Nothing changes them after
# parsing, and nothing hashes them.
@dataclass(slots=True)
class UserRef:
    external_id: str | None = None
    email: str | None = None


@dataclass(slots=True)
class AccountRef:
    external_id: str | None = None
    domain: str | None = None


def _identifier(value: Any, errors: dict[str, str], path: str, name: str) -> str | None:
    """`value` as an identifier (trimmed text; None when absent or blank). A problem goes to errors[path.name]: the
    path is only written out then, not for each of the thousands of good identifiers a second."""
    if type(value) is str:
        text = value.strip()
    elif value is None:
        return None
    elif isinstance(value, bool) or not isinstance(value, str | int):
        errors[f"{path}.{name}"] = "must be a string"
        return None
    else:
        text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        errors[f"{path}.{name}"] = f"must be at most {MAX_ID_LENGTH} characters"
        return None
    return text


def normalize_email(value: str) -> str:
    return value.strip().lower()


def normalize_domain(value: str) -> str:
    text = value.strip().lower()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.split("/", 1)[0].split(":", 1)[0].removeprefix("www.")
    return text.rstrip(".")


def parse_user_ref(raw: Any, path: str) -> UserRef:
    errors: dict[str, str] = {}
    if not isinstance(raw, dict):
        raise CallInvalid({path: "must be an object with userId and/or email"})
    external_id = _identifier(raw.get("userId"), errors, path, "userId")
    email = _identifier(raw.get("email"), errors, path, "email")
    if email is not None:
        email = normalize_email(email)
        if not _EMAIL.match(email):
            errors[f"{path}.email"] = f"{email!r} is not an email address"
    if errors:
        raise CallInvalid(errors)
    if external_id is None and email is None:
        raise CallInvalid({path: "needs userId or email"})
    return UserRef(external_id=external_id, email=email)


def parse_account_ref(raw: Any, path: str) -> AccountRef:
    errors: dict[str, str] = {}
    if not isinstance(raw, dict):
        raise CallInvalid({path: "must be an object with accountId and/or domain"})
    external_id = _identifier(raw.get("accountId"), errors, path, "accountId")
    domain = _identifier(raw.get("domain"), errors, path, "domain")
    if domain is not None:
        domain = normalize_domain(domain)
        if not _DOMAIN.match(domain):
            errors[f"{path}.domain"] = f"{domain!r} is not a domain name"
    if errors:
        raise CallInvalid(errors)
    if external_id is None and domain is None:
        raise CallInvalid({path: "needs accountId or domain"})
    return AccountRef(external_id=external_id, domain=domain)


# --- properties -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)  # the same few keys arrive millions of times
def normalize_key(key: str) -> str:
    """Trimmed, lower-case, inner whitespace as `_` (as journy.io and its SDKs do)."""
    return _WHITESPACE.sub("_", key.strip().lower())


# Property keys as sent -> their normalized form, for keys that are valid: every call of every request looks its
# keys up here first (one dict lookup instead of a cached call and a length check). Bounded: keys past the bound
# take the general path.
_VALID_KEYS: dict[str, str] = {}
_VALID_KEYS_MAX = 20_000


# What SDKs send (JavaScript's toISOString(), and the same to the second or the microsecond): UTC with a "Z",
# which datetime.fromisoformat reads as it is — the same instant and zone as the general path below, in half
# the time. Every event's timestamp takes this path.
_UTC_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}|\.\d{6})?Z")
_UTC_DATETIME_LENGTHS = frozenset((20, 24, 27))


def parse_datetime(value: str) -> datetime | None:
    if len(value) in _UTC_DATETIME_LENGTHS and value[-1] == "Z" and _UTC_DATETIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # a day or hour out of range, year 0
            return None
    return _parse_datetime_general(value)


def _parse_datetime_general(value: str) -> datetime | None:
    # Cheap pre-check first: most strings are not dates, and this runs for every text value.
    if len(value) < 16 or not value.lstrip()[:4].isdigit() or not _ISO_DATETIME.match(value.strip()):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        # Storable and readable back: PostgreSQL refuses offsets of 16 hours or more, and the instant must stay
        # within Python's years 1-9999 in UTC (0001-01-01T00:00+05:00 is in year 0).
        if abs(parsed.utcoffset() or ZERO) > MAX_UTC_OFFSET:
            return None
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed


def value_type(value: PropertyValue) -> str:
    """The PropertyDefinition type of a (validated, non-null) value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    assert isinstance(value, str)
    return "datetime" if parse_datetime(value) is not None else "text"


class PropertyMap(dict[str, PropertyValue]):
    """Validated properties, with the catalogue type of each non-null value (found while parsing, once)."""

    __slots__ = ("types",)

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}


def property_types(properties: dict[str, PropertyValue]) -> dict[str, str]:
    """Key -> catalogue type of the non-null values (a fresh dict the caller may change)."""
    if isinstance(properties, PropertyMap):
        return dict(properties.types)
    return {key: value_type(value) for key, value in properties.items() if value is not None}


def _unsupported(value: Any) -> str:
    kind = "an object" if isinstance(value, dict) else type(value).__name__
    return f"{kind} is not a supported value (string, number, boolean, datetime, list of strings)"


def parse_properties(raw: Any, path: str, *, allow_lists: bool = True) -> PropertyMap:
    """Validate a properties object; runs for every call, so it checks exact types in one pass."""
    properties = PropertyMap()
    if raw is None:
        return properties
    if not isinstance(raw, dict):
        raise CallInvalid({path: "must be an object"})
    types = properties.types
    errors: dict[str, str] = {}
    valid_keys = _VALID_KEYS
    for raw_key, value in raw.items():
        key = valid_keys.get(raw_key)
        if key is None:
            key = normalize_key(raw_key if type(raw_key) is str else str(raw_key))
            if not key or len(key) > MAX_KEY_LENGTH:
                errors[f"{path}.{raw_key}"] = f"keys must be 1-{MAX_KEY_LENGTH} characters"
                continue
            if type(raw_key) is str and len(valid_keys) < _VALID_KEYS_MAX:
                valid_keys[raw_key] = key
        kind = type(value)
        if kind is str:
            size = len(value)
            if size > MAX_TEXT_LENGTH:
                errors[f"{path}.{key}"] = f"text longer than {MAX_TEXT_LENGTH} characters"
                continue
            # Most texts are no dates: their length or first character rules them out without a call (parse_datetime's
            # own tests).
            maybe_date = size >= 16 and (value[0].isdigit() or value[0].isspace())
            types[key] = "datetime" if maybe_date and parse_datetime(value) is not None else "text"
        elif kind is bool:
            types[key] = "boolean"
        elif kind is int:
            types[key] = "number"
        elif kind is float:
            if not math.isfinite(value):
                errors[f"{path}.{key}"] = "numbers must be finite"
                continue
            types[key] = "number"
        elif value is None:
            types.pop(key, None)  # deletes the property; no type to check
        elif kind is list:
            if not allow_lists:
                errors[f"{path}.{key}"] = "event metadata holds single values (string, number, boolean), not lists"
                continue
            if len(value) > MAX_LIST_LENGTH or not all(type(item) is str for item in value):
                errors[f"{path}.{key}"] = f"lists hold at most {MAX_LIST_LENGTH} strings"
                continue
            value = list(value)
            types[key] = "list"
        else:
            errors[f"{path}.{key}"] = _unsupported(value)
            continue
        properties[key] = value
    if errors:
        raise CallInvalid(errors)
    return properties


def parse_timestamp(raw: Any, path: str, *, now: datetime) -> datetime | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise CallInvalid({path: "must be an ISO-8601 date-time string"})
    parsed = parse_datetime(raw)
    if parsed is None:
        raise CallInvalid({path: f"{raw!r} is not an ISO-8601 date-time (e.g. 2026-01-31T12:00:00Z)"})
    if parsed > now + FUTURE_TOLERANCE:
        raise CallInvalid({path: f"{raw} is more than a day in the future"})
    return parsed


# --- the calls ------------------------------------------------------------------------------------


@final  # the ingestion service tests `type(call) is Track` on its hot path
@dataclass(slots=True)
class Track:
    name: str
    at: datetime
    user: UserRef | None = None
    account: AccountRef | None = None
    device_id: str | None = None
    properties: dict[str, PropertyValue] = field(default_factory=dict)
    message_id: str | None = None


@dataclass(frozen=True)
class UpsertUser:
    user: UserRef
    at: datetime
    properties: dict[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class UpsertAccount:
    account: AccountRef
    at: datetime
    properties: dict[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class DeleteUser:
    user: UserRef


@dataclass(frozen=True)
class DeleteAccount:
    account: AccountRef


@dataclass(frozen=True)
class MemberChange:
    user: UserRef
    properties: dict[str, PropertyValue] = field(default_factory=dict)


@dataclass(frozen=True)
class AddUsers:
    account: AccountRef
    users: tuple[MemberChange, ...]
    at: datetime


@dataclass(frozen=True)
class RemoveUsers:
    account: AccountRef
    users: tuple[UserRef, ...]
    at: datetime


@dataclass(frozen=True)
class Link:
    device_id: str
    user: UserRef
    at: datetime


Call = Track | UpsertUser | UpsertAccount | DeleteUser | DeleteAccount | AddUsers | RemoveUsers | Link


@dataclass(frozen=True)
class Rejected:
    index: int
    fields: dict[str, str]

    @property
    def message(self) -> str:
        return "; ".join(f"{path}: {text}" for path, text in self.fields.items())
