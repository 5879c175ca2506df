"""DRF authentication: secret keys (management API), write keys (ingestion), sessions (UI).

- management API: `Authorization: Bearer plg_sk_…`, or the UI session (DRF SessionAuthentication, CSRF-checked)
- ingestion: `x-api-key: plg_pk_…` (journy.io SDK) or HTTP Basic with the key as user name (Segment SDKs)
"""

from __future__ import annotations

import base64
import binascii

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from plgapp.keys import KeyKind, kind_of
from plgapp.models import ApiKey
from plgapp.selectors import api_key_authenticate
from plgapp.services import api_key_mark_used


class ApiKeyPrincipal:
    """request.user for key-authenticated calls: authenticated, but not a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


def authenticate_raw_key(raw_key: str, *, accepted: frozenset[KeyKind]) -> tuple[ApiKeyPrincipal, ApiKey]:
    kind = kind_of(raw_key)
    if kind is None:
        raise AuthenticationFailed("That is not an API key of this service: keys start with plg_pk_ or plg_sk_.")
    if kind == KeyKind.SECRET and kind not in accepted:
        raise AuthenticationFailed(
            "This is a secret key (plg_sk_…), which is for the management API; send data with a write key (plg_pk_…)."
        )
    if kind not in accepted:
        wanted = " or ".join(sorted(k.value for k in accepted))
        raise AuthenticationFailed(f"This endpoint needs a {wanted} key; a {kind.value} key was sent.")
    api_key = api_key_authenticate(raw_key=raw_key)  # the rest of the request sees this key's tenant's rows only
    if api_key is None:
        raise AuthenticationFailed("Invalid or revoked API key.")
    api_key_mark_used(api_key=api_key, now=timezone.now())
    return ApiKeyPrincipal(api_key), api_key


def _header_parts(request: Request) -> list[bytes]:
    return get_authorization_header(request).split()


def _decode(token: bytes) -> str:
    try:
        return token.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise AuthenticationFailed("The API key contains characters an API key never has.") from exc


class SecretKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        parts = _header_parts(request)
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Send the header as 'Authorization: Bearer <secret key>'.")
        raw_key = _decode(parts[1])
        if kind_of(raw_key) == KeyKind.WRITE:
            raise AuthenticationFailed(
                "This is a write key (plg_pk_…), which can only send data; the management API needs a secret key "
                "(plg_sk_…)."
            )
        return authenticate_raw_key(raw_key, accepted=frozenset({KeyKind.SECRET}))

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class WriteKeyAuthentication(BaseAuthentication):
    """Write key from `x-api-key`, HTTP Basic user name, or `Authorization: Bearer`.

    Secret keys are refused here: they belong on servers talking to the management API, and a
    secret key showing up in ingestion traffic usually means it was shipped inside a client app.
    """

    accepted = frozenset({KeyKind.WRITE})

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        raw_key = self._raw_key(request)
        if raw_key is None:
            return None
        if not raw_key:
            raise AuthenticationFailed("The API key is empty.")
        return authenticate_raw_key(raw_key, accepted=self.accepted)

    def _raw_key(self, request: Request) -> str | None:
        header_key = request.META.get("HTTP_X_API_KEY")
        authorization = self._authorization_key(request)
        if header_key is not None and authorization is not None and authorization != str(header_key).strip():
            # Which one was meant? Guessing could write one tenant's data into another's.
            raise AuthenticationFailed("Two different API keys were sent (x-api-key and Authorization); send one.")
        if header_key is not None:
            return str(header_key).strip()
        return authorization

    def _authorization_key(self, request: Request) -> str | None:
        parts = _header_parts(request)
        if not parts:
            return None
        scheme = parts[0].lower()
        if scheme == b"bearer" and len(parts) == 2:
            return _decode(parts[1])
        if scheme != b"basic":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Send the header as 'Authorization: Basic base64(<write key>:)'.")
        try:
            user_pass = base64.b64decode(parts[1], validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthenticationFailed("The Basic credentials are not valid base64 of '<write key>:'.") from exc
        return user_pass.partition(":")[0].strip()

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="ingest"'
