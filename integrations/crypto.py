"""Credentials encrypted at rest: Fernet (cryptography) with keys from settings, rotation by MultiFernet.

`CREDENTIALS_KEYS` lists Fernet keys newest first: new secrets are encrypted with the first, old ones still
decrypt with any. Without it, one key is derived from SECRET_KEY (HKDF-SHA256), so a fresh install works;
rotating SECRET_KEY then needs the old derived key in CREDENTIALS_KEYS.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


def derived_key(secret: str) -> bytes:
    """The Fernet key SECRET_KEY gives when CREDENTIALS_KEYS is unset."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"plg connection credentials").derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(raw)


@cache
def _fernet(keys: tuple[str, ...], secret: str) -> MultiFernet:
    chosen = [key.encode() for key in keys] or [derived_key(secret)]
    return MultiFernet([Fernet(key) for key in chosen])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIALS_KEYS), settings.SECRET_KEY)


def encrypt(values: dict[str, Any]) -> str:
    return _current().encrypt(orjson.dumps(values)).decode()


class CredentialsUnreadable(Exception):
    """Encrypted with a key that is no longer configured."""


def decrypt(token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        values = orjson.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsUnreadable("the credentials were encrypted with a key that is not configured") from None
    return dict(values)
