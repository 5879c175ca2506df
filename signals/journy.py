"""The journy.io-compatible request bodies (DESIGN §6) -> calls. Pure: no Django, no database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from signals.calls import (
    MAX_USERS_PER_CALL,
    AddUsers,
    Call,
    CallInvalid,
    DeleteAccount,
    DeleteUser,
    Link,
    MemberChange,
    RemoveUsers,
    Track,
    UpsertAccount,
    UpsertUser,
    parse_account_ref,
    parse_properties,
    parse_timestamp,
    parse_user_ref,
)

MAX_EVENT_NAME = 255


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CallInvalid({"body": "must be a JSON object"})
    return body


def _identification(body: dict[str, Any], *, user: bool, account: bool) -> dict[str, Any]:
    identification = body.get("identification")
    if not isinstance(identification, dict):
        raise CallInvalid({"identification": "is required: an object naming the " + ("user" if user else "account")})
    return identification


def _time(body: dict[str, Any], key: str, now: datetime) -> datetime:
    return parse_timestamp(body.get(key), key, now=now) or now


def parse_track(body: Any, *, now: datetime) -> Track:
    body = _object(body)
    identification = body.get("identification")
    if not isinstance(identification, dict):
        raise CallInvalid({"identification": "is required: {user: {...}} and/or {account: {...}}"})
    raw_user, raw_account = identification.get("user"), identification.get("account")
    user = parse_user_ref(raw_user, "identification.user") if raw_user else None
    account = parse_account_ref(raw_account, "identification.account") if raw_account else None
    if user is None and account is None:
        raise CallInvalid({"identification": "needs a user, an account, or both"})
    name = body.get("name")
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped:
        raise CallInvalid({"name": "is required: the event's name"})
    if len(name) > MAX_EVENT_NAME:
        raise CallInvalid({"name": f"must be at most {MAX_EVENT_NAME} characters"})
    message_id = body.get("messageId")
    if message_id is not None and (not isinstance(message_id, str) or not 0 < len(message_id) <= 255):
        raise CallInvalid({"messageId": "must be a string of 1-255 characters"})
    return Track(
        name=stripped,
        at=_time(body, "triggeredAt", now),
        user=user,
        account=account,
        properties=parse_properties(body.get("metadata"), "metadata", allow_lists=False),
        message_id=message_id,
    )


def parse_upsert_user(body: Any, *, now: datetime) -> UpsertUser:
    body = _object(body)
    identification = _identification(body, user=True, account=False)
    return UpsertUser(
        user=parse_user_ref(identification, "identification"),
        properties=parse_properties(body.get("properties"), "properties"),
        at=_time(body, "timestamp", now),
    )


def parse_upsert_account(body: Any, *, now: datetime) -> UpsertAccount:
    body = _object(body)
    identification = _identification(body, user=False, account=True)
    return UpsertAccount(
        account=parse_account_ref(identification, "identification"),
        properties=parse_properties(body.get("properties"), "properties"),
        at=_time(body, "timestamp", now),
    )


def parse_delete_user(body: Any, *, now: datetime) -> DeleteUser:
    body = _object(body)
    return DeleteUser(user=parse_user_ref(_identification(body, user=True, account=False), "identification"))


def parse_delete_account(body: Any, *, now: datetime) -> DeleteAccount:
    body = _object(body)
    return DeleteAccount(account=parse_account_ref(_identification(body, user=False, account=True), "identification"))


def _users(body: dict[str, Any]) -> list[Any]:
    users = body.get("users")
    if not isinstance(users, list) or not users:
        raise CallInvalid({"users": "is required: a list of {identification: {...}}"})
    if len(users) > MAX_USERS_PER_CALL:
        raise CallInvalid({"users": f"at most {MAX_USERS_PER_CALL} users a call, got {len(users)}"})
    return users


def parse_add_users(body: Any, *, now: datetime) -> AddUsers:
    body = _object(body)
    members = []
    errors: dict[str, str] = {}
    for n, item in enumerate(_users(body)):
        try:
            if not isinstance(item, dict):
                raise CallInvalid({f"users.{n}": "must be an object with identification"})
            members.append(
                MemberChange(
                    user=parse_user_ref(item.get("identification"), f"users.{n}.identification"),
                    properties=parse_properties(item.get("properties"), f"users.{n}.properties"),
                )
            )
        except CallInvalid as exc:
            errors.update(exc.fields)
    if errors:
        raise CallInvalid(errors)
    return AddUsers(
        account=parse_account_ref(body.get("account"), "account"),
        users=tuple(members),
        at=_time(body, "timestamp", now),
    )


def parse_remove_users(body: Any, *, now: datetime) -> RemoveUsers:
    body = _object(body)
    refs = []
    errors: dict[str, str] = {}
    for n, item in enumerate(_users(body)):
        try:
            raw = item.get("identification") if isinstance(item, dict) else None
            refs.append(parse_user_ref(raw, f"users.{n}.identification"))
        except CallInvalid as exc:
            errors.update(exc.fields)
    if errors:
        raise CallInvalid(errors)
    return RemoveUsers(
        account=parse_account_ref(body.get("account"), "account"), users=tuple(refs), at=_time(body, "timestamp", now)
    )


def parse_link(body: Any, *, now: datetime) -> Link:
    body = _object(body)
    device_id = body.get("deviceId")
    if not isinstance(device_id, str) or not device_id.strip() or len(device_id) > 255:
        raise CallInvalid({"deviceId": "is required: the anonymous device id (1-255 characters)"})
    return Link(
        device_id=device_id.strip(),
        user=parse_user_ref(_identification(body, user=True, account=False), "identification"),
        at=_time(body, "timestamp", now),
    )


PARSERS: dict[str, Any] = {
    "track": parse_track,
    "upsertUser": parse_upsert_user,
    "upsertAccount": parse_upsert_account,
    "deleteUser": parse_delete_user,
    "deleteAccount": parse_delete_account,
    "addUsers": parse_add_users,
    "removeUsers": parse_remove_users,
    "link": parse_link,
}


def parse_call(kind: str, body: Any, *, now: datetime) -> Call:
    parser = PARSERS.get(kind)
    if parser is None:
        raise CallInvalid({"type": f"unknown call type {kind!r}; one of {', '.join(PARSERS)}"})
    result: Call = parser(body, now=now)
    return result
