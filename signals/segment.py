"""Segment Tracking API messages (identify, group, track, alias, page, screen) -> calls. Pure.

Mapping (DESIGN §6): identify traits are user properties (`email` is the user's email); group with
userId + groupId upserts the account (traits; `name`, and `domain` or the host of `website`) and the
membership, whose relationship properties come from `context.membership`; track with
`context.groupId` is an event of the user in that account; alias links previousId -> userId;
`anonymousId` is the device id; `messageId` dedupes events; `timestamp` is the time described.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from signals.calls import (
    AccountRef,
    AddUsers,
    Call,
    CallInvalid,
    Link,
    MemberChange,
    Track,
    UpsertAccount,
    UpsertUser,
    normalize_domain,
    parse_account_ref,
    parse_properties,
    parse_timestamp,
    parse_user_ref,
)

MESSAGE_TYPES = ("identify", "group", "track", "alias", "page", "screen")


def _text(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CallInvalid({key: "must be a string"})
    return str(value)[:255]


def _flatten(values: Any, path: str, prefix: str = "") -> dict[str, Any]:
    """Segment properties may nest objects; events keep single values, so nested keys become a.b."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise CallInvalid({path: "must be an object"})
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _at(message: dict[str, Any], now: datetime) -> datetime:
    return parse_timestamp(message.get("timestamp"), "timestamp", now=now) or now


def _user(message: dict[str, Any], *, email: Any = None) -> Any:
    user_id = _text(message, "userId")
    if user_id is None and not email:
        return None
    return parse_user_ref({"userId": user_id, "email": email}, "userId")


def _context(message: dict[str, Any]) -> dict[str, Any]:
    context = message.get("context") or {}
    if not isinstance(context, dict):
        raise CallInvalid({"context": "must be an object"})
    return context


def parse_identify(message: dict[str, Any], *, now: datetime) -> list[Call]:
    traits = message.get("traits") or {}
    if not isinstance(traits, dict):
        raise CallInvalid({"traits": "must be an object"})
    traits = dict(traits)
    email = traits.pop("email", None)
    user = _user(message, email=email)
    if user is None:
        raise CallInvalid({"userId": "identify needs a userId or traits.email (anonymous profiles are not kept)"})
    at = _at(message, now)
    calls: list[Call] = [UpsertUser(user=user, properties=parse_properties(traits, "traits"), at=at)]
    anonymous_id = _text(message, "anonymousId")
    if anonymous_id and user.external_id:
        calls.append(Link(device_id=anonymous_id, user=user, at=at))
    return calls


def _account_ref(group_id: str, traits: dict[str, Any]) -> AccountRef:
    domain = traits.get("domain") or None
    website = traits.get("website")
    if not domain and isinstance(website, str) and website.strip():
        domain = normalize_domain(website)
    return parse_account_ref({"accountId": group_id, "domain": domain}, "groupId")


def parse_group(message: dict[str, Any], *, now: datetime) -> list[Call]:
    group_id = _text(message, "groupId")
    if group_id is None:
        raise CallInvalid({"groupId": "is required"})
    traits = message.get("traits") or {}
    if not isinstance(traits, dict):
        raise CallInvalid({"traits": "must be an object"})
    account = _account_ref(group_id, traits)
    at = _at(message, now)
    calls: list[Call] = [UpsertAccount(account=account, properties=parse_properties(traits, "traits"), at=at)]
    user = _user(message)
    if user is not None:
        membership = _context(message).get("membership")
        properties = parse_properties(membership, "context.membership")
        calls.append(AddUsers(account=account, users=(MemberChange(user=user, properties=properties),), at=at))
    return calls


def _event(message: dict[str, Any], name: str, properties: dict[str, Any], *, now: datetime) -> list[Call]:
    user = _user(message)
    anonymous_id = _text(message, "anonymousId")
    if user is None and anonymous_id is None:
        raise CallInvalid({"userId": "a track call needs userId or anonymousId"})
    group_id = _context(message).get("groupId")
    account = parse_account_ref({"accountId": group_id}, "context.groupId") if group_id else None
    return [
        Track(
            name=name,
            at=_at(message, now),
            user=user,
            account=account,
            device_id=anonymous_id,
            properties=parse_properties(properties, "properties", allow_lists=False),
            message_id=_text(message, "messageId"),
        )
    ]


def parse_track(message: dict[str, Any], *, now: datetime) -> list[Call]:
    name = message.get("event")
    if not isinstance(name, str) or not name.strip():
        raise CallInvalid({"event": "is required: the event's name"})
    return _event(message, name.strip()[:255], _flatten(message.get("properties"), "properties"), now=now)


def _page_or_screen(kind: str, message: dict[str, Any], *, now: datetime) -> list[Call]:
    properties = _flatten(message.get("properties"), "properties")
    for key in ("name", "category"):
        if message.get(key) is not None:
            properties.setdefault(key, message[key])
    return _event(message, kind, properties, now=now)


def parse_alias(message: dict[str, Any], *, now: datetime) -> list[Call]:
    previous_id = _text(message, "previousId")
    user = _user(message)
    if previous_id is None or user is None:
        raise CallInvalid({"previousId": "alias needs previousId and userId"})
    return [Link(device_id=previous_id, user=user, at=_at(message, now))]


def parse_message(message: Any, *, kind: str | None = None, now: datetime) -> list[Call]:
    if not isinstance(message, dict):
        raise CallInvalid({"message": "must be an object"})
    kind = kind or message.get("type")
    if kind == "identify":
        return parse_identify(message, now=now)
    if kind == "group":
        return parse_group(message, now=now)
    if kind == "track":
        return parse_track(message, now=now)
    if kind == "alias":
        return parse_alias(message, now=now)
    if kind in ("page", "screen"):
        return _page_or_screen(str(kind), message, now=now)
    raise CallInvalid({"type": f"unknown message type {kind!r}; one of {', '.join(MESSAGE_TYPES)}"})
