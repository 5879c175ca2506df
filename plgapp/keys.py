"""API key format: recognizable prefix + 256 random bits; only the sha256 of a key is ever stored."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum


class KeyKind(StrEnum):
    WRITE = "write"
    SECRET = "secret"  # noqa: S105 - a key kind, not a password


KEY_PREFIXES: dict[KeyKind, str] = {KeyKind.WRITE: "plg_pk_", KeyKind.SECRET: "plg_sk_"}
# How much of a key we keep in clear text so people can tell their keys apart: prefix + 8 characters.
DISPLAY_PREFIX_LENGTH = len("plg_sk_") + 8
_RANDOM_BYTES = 32


def generate_raw_key(kind: KeyKind) -> str:
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(_RANDOM_BYTES)


def hash_key(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def kind_of(raw_key: str) -> KeyKind | None:
    for kind, prefix in KEY_PREFIXES.items():
        if raw_key.startswith(prefix):
            return kind
    return None


def display_prefix(raw_key: str) -> str:
    return raw_key[:DISPLAY_PREFIX_LENGTH]
