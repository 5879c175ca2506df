"""Ingestion calls: parse and validate what SDKs send into plain, typed calls. No Django, no database.

Both front doors (journy.io-compatible and Segment-compatible) turn their JSON into these calls; the
service layer (signals.services.calls_ingest) stores them. Validation here is cheap and per call, so a
bad call in a batch is rejected alone, with a message that says what is wrong and where.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_KEY_LENGTH = 255
MAX_TEXT_LENGTH = 10_000
MAX_LIST_LENGTH = 1_000
MAX_ID_LENGTH = 255
MAX_USERS_PER_CALL = 100
FUTURE_TOLERANCE = timedelta(days=1)

PropertyValue = str | int | float | bool | list[str] | None

_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class CallInvalid(ValueError):
    """A call that cannot be stored; `fields` maps a dotted path to what is wrong there."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in fields.items()))
        self.fields = fields


# --- identification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRef:
    external_id: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class AccountRef:
    external_id: str | None = None
    domain: str | None = None


def _identifier(value: Any, path: str, errors: dict[str, str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors[path] = "must be a string"
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        errors[path] = f"must be at most {MAX_ID_LENGTH} characters"
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
    external_id = _identifier(raw.get("userId"), f"{path}.userId", errors)
    email = _identifier(raw.get("email"), f"{path}.email", errors)
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
    external_id = _identifier(raw.get("accountId"), f"{path}.accountId", errors)
    domain = _identifier(raw.get("domain"), f"{path}.domain", errors)
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


def normalize_key(key: str) -> str:
    """Trimmed, lower-case, inner whitespace as `_` (as journy.io and its SDKs do)."""
    return re.sub(r"\s+", "_", key.strip().lower())


def parse_datetime(value: str) -> datetime | None:
    if not _ISO_DATETIME.match(value.strip()):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def _property_value(value: Any, path: str, *, allow_lists: bool) -> PropertyValue:
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str) and len(value) > MAX_TEXT_LENGTH:
            raise CallInvalid({path: f"text longer than {MAX_TEXT_LENGTH} characters"})
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise CallInvalid({path: "numbers must be finite"})
        return value
    if isinstance(value, list):
        if not allow_lists:
            raise CallInvalid({path: "event metadata holds single values (string, number, boolean), not lists"})
        if len(value) > MAX_LIST_LENGTH or not all(isinstance(item, str) for item in value):
            raise CallInvalid({path: f"lists hold at most {MAX_LIST_LENGTH} strings"})
        return list(value)
    kind = "an object" if isinstance(value, dict) else type(value).__name__
    raise CallInvalid({path: f"{kind} is not a supported value (string, number, boolean, datetime, list of strings)"})


def parse_properties(raw: Any, path: str, *, allow_lists: bool = True) -> dict[str, PropertyValue]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CallInvalid({path: "must be an object"})
    properties: dict[str, PropertyValue] = {}
    errors: dict[str, str] = {}
    for raw_key, raw_value in raw.items():
        key = normalize_key(str(raw_key))
        if not key or len(key) > MAX_KEY_LENGTH:
            errors[f"{path}.{raw_key}"] = f"keys must be 1-{MAX_KEY_LENGTH} characters"
            continue
        try:
            properties[key] = _property_value(raw_value, f"{path}.{key}", allow_lists=allow_lists)
        except CallInvalid as exc:
            errors.update(exc.fields)
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


@dataclass(frozen=True)
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
