"""A fake Slack Web API (``/api/<method>``) for driving ``slack_sdk.WebClient`` in tests.

Point the official client at it (no sleeping retry handlers, as DESIGN §11 asks of workers)::

    from slack_sdk import WebClient

    with FakeSlack() as slack:
        team = slack.add_workspace("Acme")
        channel = slack.add_channel(team.team_id, "alerts")
        client = WebClient(token=slack.issue_bot_token(team.team_id), base_url=slack.url + "/api/",
                           timeout=5, retry_handlers=[])
        client.chat_postMessage(channel=channel.id, text="hi", attachments=[{"color": "good", "text": "x"}])
        slack.messages(channel.id)[0].attachments[0]["color"] == "good"

Emulated methods, answering like Slack (HTTP 200 with ``{"ok": false, "error": ...}`` for API errors):

* ``auth.test`` — who the token belongs to.
* ``chat.postMessage`` — needs a bot token (``xoxb-`` or rotated ``xoxe.xoxb-``) with ``chat:write`` in
  ``Authorization: Bearer`` (or a ``token`` argument); ``channel`` by id or name (``#alerts``); one of
  ``text``, ``blocks``, ``attachments``; ``attachments``/``blocks`` as JSON arrays or JSON strings (form
  posts). Errors: ``not_authed``, ``invalid_auth``, ``token_revoked``, ``token_expired``,
  ``not_allowed_token_type``, ``missing_scope``, ``channel_not_found``, ``not_in_channel``, ``is_archived``,
  ``no_text``, ``msg_too_long``, ``invalid_blocks``, ``invalid_attachments``. Answers ``channel``, ``ts``
  and ``message``.
* ``conversations.list`` — cursor pagination (``cursor``, ``limit`` 1..1000, default 100;
  ``response_metadata.next_cursor`` empty on the last page), ``types`` (``public_channel``,
  ``private_channel``; ``im``/``mpim`` accepted, there are none) and ``exclude_archived``. As in real
  Slack, filters apply *after* paging, so a page may hold fewer than ``limit`` channels (even none) while
  ``next_cursor`` is set: clients must follow the cursor, not count. Private channels are listed only
  when the bot is a member.
* ``oauth.v2.access`` — ``client_id``/``client_secret`` by HTTP Basic auth (what slack_sdk sends) or form
  fields; ``code`` exchange (single-use, ``redirect_uri`` must match the authorize step) answers a bot
  ``access_token``, ``team``, ``bot_user_id``, ``scope``, ``app_id``, ``authed_user``; for an app with token
  rotation also ``refresh_token`` (``xoxe-1-…``) and ``expires_in``, the access token being ``xoxe.xoxb-…``.
  ``grant_type=refresh_token`` issues a new pair; the previous access token then answers ``token_expired``
  and the previous refresh token ``invalid_refresh_token`` (stricter than Slack, which lets an old token
  live until it expires: a client that keeps using it is caught at once).
* Rate limits: a 429 answers ``{"ok": false, "error": "ratelimited"}`` with ``Retry-After``; 5xx answers
  ``{"ok": false, "error": "internal_error" | "service_unavailable"}``.

Client keys (for faults, rate limits and the Retry-After check): ``<team>/chat.postMessage/<channel id>``
for posts (Slack's limit is about one message a second per channel), ``<team>/<method>`` otherwise.

Simplifications: one bot per workspace, no users/IMs, no threads beyond storing ``thread_ts``, no
enterprise grid, attachment colours are stored and echoed as sent (Slack accepts ``good``, ``warning``,
``danger`` and ``#RRGGBB``), token expiry is checked against the injected clock.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, RecordedRequest, Response, RouteHandler, retry_after_header

DEFAULT_BOT_SCOPES = ("chat:write", "chat:write.public", "channels:read", "groups:read", "channels:history")
ROTATION_EXPIRES_IN = 43200
MAX_TEXT_LENGTH = 40000
CONVERSATION_TYPES = frozenset({"public_channel", "private_channel", "mpim", "im"})

SlackMethod = Callable[[RecordedRequest, dict[str, Any]], dict[str, Any]]


class SlackError(Exception):
    """An API-level error: Slack answers it with HTTP 200 and ``{"ok": false, "error": code, **extra}``."""

    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass
class SlackChannel:
    id: str
    name: str
    team_id: str
    created: int
    is_private: bool = False
    is_archived: bool = False
    is_member: bool = True
    is_general: bool = False
    topic: str = ""
    purpose: str = ""
    num_members: int = 1

    def to_api(self) -> dict[str, Any]:
        """The conversation object as ``conversations.list`` shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "created": self.created,
            "is_archived": self.is_archived,
            "is_general": self.is_general,
            "unlinked": 0,
            "name_normalized": self.name,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_pending_ext_shared": False,
            "pending_shared": [],
            "context_team_id": self.team_id,
            "shared_team_ids": [self.team_id],
            "parent_conversation": None,
            "creator": "U00000000",
            "is_member": self.is_member,
            "topic": {"value": self.topic, "creator": "", "last_set": 0},
            "purpose": {"value": self.purpose, "creator": "", "last_set": 0},
            "previous_names": [],
            "num_members": self.num_members,
        }


@dataclass
class SlackMessage:
    """A posted message as stored by the fake (attachments and blocks as the client sent them)."""

    channel: str
    ts: str
    text: str | None
    attachments: list[dict[str, Any]]
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    user: str
    bot_id: str
    token: str
    args: dict[str, Any]

    @property
    def colors(self) -> list[str | None]:
        return [attachment.get("color") for attachment in self.attachments]


@dataclass
class SlackWorkspace:
    team_id: str
    name: str
    domain: str
    bot_user_id: str
    bot_id: str
    channels: dict[str, SlackChannel] = field(default_factory=dict)


@dataclass
class SlackToken:
    token: str
    team_id: str
    scopes: tuple[str, ...]
    kind: str = "bot"
    app_id: str | None = None
    expires_at: float | None = None
    is_revoked: bool = False
    is_superseded: bool = False


@dataclass
class SlackApp:
    app_id: str
    client_id: str
    client_secret: str
    token_rotation: bool = False


@dataclass
class SlackOAuthCode:
    code: str
    client_id: str
    team_id: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    is_used: bool = False


@dataclass
class SlackRefreshToken:
    token: str
    client_id: str
    team_id: str
    scopes: tuple[str, ...]
    access_token: str
    is_used: bool = False


class FakeSlack(FakeServer):
    """The fake Slack Web API; see the module docstring. Seed with ``add_workspace``/``add_channel``/..."""

    name = "slack"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workspaces: dict[str, SlackWorkspace] = {}
        self.tokens: dict[str, SlackToken] = {}
        self.apps: dict[str, SlackApp] = {}
        self.codes: dict[str, SlackOAuthCode] = {}
        self.refresh_tokens: dict[str, SlackRefreshToken] = {}
        self.posted: dict[str, list[SlackMessage]] = {}
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        methods = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "conversations.list": self._conversations_list,
            "conversations.history": self._conversations_history,
            "oauth.v2.access": self._oauth_v2_access,
        }
        for method, handler in methods.items():
            for verb in ("GET", "POST"):
                self.route(verb, rf"/api/{method}", self._api(handler))

    # ----------------------------------------------------------------- seeding and inspection

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08X}"

    def add_workspace(self, name: str = "Acme", *, team_id: str | None = None) -> SlackWorkspace:
        with self.lock:
            team_id = team_id or self._id("T")
            workspace = SlackWorkspace(
                team_id=team_id,
                name=name,
                domain=name.lower().replace(" ", "-"),
                bot_user_id=self._id("U"),
                bot_id=self._id("B"),
            )
            self.workspaces[team_id] = workspace
            return workspace

    def add_channel(
        self,
        team_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_archived: bool = False,
        is_member: bool = True,
        channel_id: str | None = None,
    ) -> SlackChannel:
        with self.lock:
            workspace = self.workspaces[team_id]
            channel = SlackChannel(
                id=channel_id or self._id("G" if is_private else "C"),
                name=name,
                team_id=team_id,
                created=int(time.time()),
                is_private=is_private,
                is_archived=is_archived,
                is_member=is_member,
                is_general=not workspace.channels,
            )
            workspace.channels[channel.id] = channel
            return channel

    def issue_bot_token(self, team_id: str, *, scopes: tuple[str, ...] = DEFAULT_BOT_SCOPES) -> str:
        """A long-lived (non-rotating) bot token for ``team_id``, as an install without rotation yields."""
        with self.lock:
            token = f"xoxb-{next(self._ids)}-{next(self._ids)}-{secrets.token_hex(12)}"
            self.tokens[token] = SlackToken(token=token, team_id=team_id, scopes=scopes)
            return token

    def revoke_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token].is_revoked = True

    def expire_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token].expires_at = self.clock()

    def add_app(
        self, *, client_id: str | None = None, client_secret: str | None = None, token_rotation: bool = False
    ) -> SlackApp:
        with self.lock:
            app = SlackApp(
                app_id=self._id("A"),
                client_id=client_id or f"{next(self._ids)}.{next(self._ids)}",
                client_secret=client_secret or secrets.token_hex(16),
                token_rotation=token_rotation,
            )
            self.apps[app.client_id] = app
            return app

    def issue_oauth_code(
        self,
        client_id: str,
        team_id: str,
        *,
        scopes: tuple[str, ...] = DEFAULT_BOT_SCOPES,
        redirect_uri: str | None = None,
    ) -> str:
        """The ``code`` Slack would append to the redirect after a user approves the install."""
        with self.lock:
            code = f"{next(self._ids)}.{secrets.token_hex(16)}"
            self.codes[code] = SlackOAuthCode(code, client_id, team_id, scopes, redirect_uri)
            return code

    def messages(self, channel_id: str) -> list[SlackMessage]:
        with self.lock:
            return list(self.posted.get(channel_id, []))

    def find_channel(self, team_id: str, channel: str) -> SlackChannel | None:
        """A channel by id, ``name`` or ``#name``."""
        with self.lock:
            channels = self.workspaces[team_id].channels if team_id in self.workspaces else {}
            if channel in channels:
                return channels[channel]
            name = channel.removeprefix("#")
            return next((c for c in channels.values() if c.name == name), None)

    def state(self) -> dict[str, Any]:
        return {
            "workspaces": {
                team_id: {**asdict(w), "channels": [asdict(c) for c in w.channels.values()]}
                for team_id, w in self.workspaces.items()
            },
            "tokens": [asdict(t) for t in self.tokens.values()],
            "messages": {channel: [asdict(m) for m in msgs] for channel, msgs in self.posted.items()},
        }

    def seed_demo(self) -> dict[str, Any]:
        """A workspace with a few channels and a bot token, for running the fake by hand."""
        team = self.add_workspace("Demo")
        for name in ("general", "sales", "alerts"):
            self.add_channel(team.team_id, name)
        self.add_channel(team.team_id, "deals", is_private=True)
        app = self.add_app(token_rotation=False)
        return {
            "team_id": team.team_id,
            "bot_token": self.issue_bot_token(team.team_id),
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "oauth_code": self.issue_oauth_code(app.client_id, team.team_id),
            "channels": {c.name: c.id for c in team.channels.values()},
        }

    # ----------------------------------------------------------------- provider hooks

    def client_key(self, request: RecordedRequest) -> str:
        method = request.path.removeprefix("/api/")
        args = slack_arguments(request)
        token = self.tokens.get(_bearer(request) or str(args.get("token", "")))
        team = token.team_id if token else "anonymous"
        if method == "chat.postMessage":
            channel_arg = str(args.get("channel", ""))
            channel = self.find_channel(team, channel_arg) if token else None
            return f"{team}/{method}/{channel.id if channel else channel_arg}"
        return f"{team}/{method}"

    def rate_limited_response(self, request: RecordedRequest, retry_after: float) -> Response:
        return Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after_header(retry_after)})

    def server_error_response(self, request: RecordedRequest, status: int) -> Response:
        error = "service_unavailable" if status == 503 else "internal_error"
        return Response(status, {"ok": False, "error": error})

    def route_not_found(self, request: RecordedRequest) -> Response:
        method = request.path.removeprefix("/api/")
        return Response(404, {"ok": False, "error": "unknown_method", "req_method": method})

    # ----------------------------------------------------------------- methods

    def _api(self, method: SlackMethod) -> RouteHandler:
        """Wrap a method implementation: arguments from query + body, ``SlackError`` to an ok=false answer."""

        def handle(request: RecordedRequest, params: dict[str, str]) -> Response:
            try:
                body = method(request, slack_arguments(request))
            except SlackError as error:
                return Response(200, {"ok": False, "error": error.code, **error.extra})
            return Response(200, {"ok": True, **body})

        return handle

    def _authenticate(self, request: RecordedRequest, args: dict[str, Any]) -> SlackToken:
        raw = _bearer(request) or args.get("token")
        if not raw:
            raise SlackError("not_authed")
        token = self.tokens.get(str(raw))
        if token is None or token.team_id not in self.workspaces:
            raise SlackError("invalid_auth")
        if token.is_revoked:
            raise SlackError("token_revoked")
        if token.is_superseded or (token.expires_at is not None and self.clock() >= token.expires_at):
            raise SlackError("token_expired")
        return token

    @staticmethod
    def _require_scope(token: SlackToken, *needed: str) -> None:
        if not any(scope in token.scopes for scope in needed):
            raise SlackError("missing_scope", needed=",".join(needed), provided=",".join(token.scopes))

    def _auth_test(self, request: RecordedRequest, args: dict[str, Any]) -> dict[str, Any]:
        token = self._authenticate(request, args)
        workspace = self.workspaces[token.team_id]
        return {
            "url": f"https://{workspace.domain}.slack.com/",
            "team": workspace.name,
            "user": "plg-bot",
            "team_id": workspace.team_id,
            "user_id": workspace.bot_user_id,
            "bot_id": workspace.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, request: RecordedRequest, args: dict[str, Any]) -> dict[str, Any]:
        token = self._authenticate(request, args)
        if not token.token.startswith(("xoxb-", "xoxe.xoxb-")):
            raise SlackError("not_allowed_token_type")
        self._require_scope(token, "chat:write")
        workspace = self.workspaces[token.team_id]
        channel = self.find_channel(token.team_id, str(args.get("channel") or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise SlackError("channel_not_found")
        if channel.is_archived:
            raise SlackError("is_archived")
        if not channel.is_member and "chat:write.public" not in token.scopes:
            raise SlackError("not_in_channel")
        text = args.get("text")
        attachments = _json_list(args.get("attachments"), "invalid_attachments")
        blocks = _json_list(args.get("blocks"), "invalid_blocks")
        if not text and not attachments and not blocks:
            raise SlackError("no_text")
        if text is not None and len(str(text)) > MAX_TEXT_LENGTH:
            raise SlackError("msg_too_long")
        ts = self._next_ts()
        message = SlackMessage(
            channel=channel.id,
            ts=ts,
            text=None if text is None else str(text),
            attachments=attachments,
            blocks=blocks,
            thread_ts=args.get("thread_ts"),
            user=workspace.bot_user_id,
            bot_id=workspace.bot_id,
            token=token.token,
            args=args,
        )
        self.posted.setdefault(channel.id, []).append(message)
        echoed: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": message.text or "",
            "user": message.user,
            "bot_id": message.bot_id,
            "team": workspace.team_id,
            "ts": ts,
        }
        if attachments:
            echoed["attachments"] = [
                {"id": i, "fallback": a.get("fallback") or a.get("text") or "", **a}
                for i, a in enumerate(attachments, start=1)
            ]
        if blocks:
            echoed["blocks"] = blocks
        if message.thread_ts:
            echoed["thread_ts"] = message.thread_ts
        return {"channel": channel.id, "ts": ts, "message": echoed}

    def _conversations_history(self, request: RecordedRequest, args: dict[str, Any]) -> dict[str, Any]:
        """Newest first; ``oldest`` (exclusive) and ``limit`` (default 100); ``metadata`` of each message only with
        ``include_all_metadata`` (as Slack). No cursor: a client that needs more pages narrows ``oldest``."""
        token = self._authenticate(request, args)
        self._require_scope(token, "channels:history", "groups:history")
        channel = self.find_channel(token.team_id, str(args.get("channel") or ""))
        if channel is None or (channel.is_private and not channel.is_member):
            raise SlackError("channel_not_found")
        oldest = float(args.get("oldest") or 0)
        limit = int(args.get("limit") or 100)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in reversed(self.posted.get(channel.id, [])) if float(m.ts) > oldest][:limit]
        messages = []
        for message in found:
            item: dict[str, Any] = {"type": "message", "ts": message.ts, "text": message.text or "",
                                    "bot_id": message.bot_id}  # fmt: skip
            metadata = message.args.get("metadata")
            if with_metadata and metadata:
                item["metadata"] = json.loads(metadata) if isinstance(metadata, str) else metadata
            messages.append(item)
        return {"messages": messages, "has_more": False, "response_metadata": {"next_cursor": ""}}

    def _conversations_list(self, request: RecordedRequest, args: dict[str, Any]) -> dict[str, Any]:
        token = self._authenticate(request, args)
        types = {t.strip() for t in str(args.get("types") or "public_channel").split(",") if t.strip()}
        if not types <= CONVERSATION_TYPES:
            raise SlackError("invalid_types")
        if "public_channel" in types:
            self._require_scope(token, "channels:read")
        if "private_channel" in types:
            self._require_scope(token, "groups:read")
        try:
            limit = int(args.get("limit") or 100)
        except ValueError:
            raise SlackError("invalid_limit") from None
        if not 1 <= limit <= 1000:
            raise SlackError("invalid_limit")
        exclude_archived = str(args.get("exclude_archived", "false")).lower() in ("true", "1")
        channels = list(self.workspaces[token.team_id].channels.values())
        start = self._cursor_position(channels, args.get("cursor"))
        page = channels[start : start + limit]
        more = start + limit < len(channels)
        visible = [
            c.to_api()
            for c in page
            if ("private_channel" if c.is_private else "public_channel") in types
            and (c.is_member or not c.is_private)
            and not (exclude_archived and c.is_archived)
        ]
        next_cursor = _encode_cursor(channels[start + limit].id) if more else ""
        return {"channels": visible, "response_metadata": {"next_cursor": next_cursor}}

    @staticmethod
    def _cursor_position(channels: list[SlackChannel], cursor: Any) -> int:
        if not cursor:
            return 0
        try:
            channel_id = base64.b64decode(str(cursor), validate=True).decode().removeprefix("team:")
        except (binascii.Error, UnicodeDecodeError):
            raise SlackError("invalid_cursor") from None
        for position, channel in enumerate(channels):
            if channel.id == channel_id:
                return position
        raise SlackError("invalid_cursor")

    def _oauth_v2_access(self, request: RecordedRequest, args: dict[str, Any]) -> dict[str, Any]:
        app = self._oauth_client(request, args)
        grant_type = args.get("grant_type") or "authorization_code"
        if grant_type == "authorization_code":
            return self._exchange_code(app, args)
        if grant_type == "refresh_token":
            return self._refresh(app, args)
        raise SlackError("invalid_grant_type")

    def _oauth_client(self, request: RecordedRequest, args: dict[str, Any]) -> SlackApp:
        client_id, client_secret = args.get("client_id"), args.get("client_secret")
        authorization = request.header("authorization") or ""
        if authorization.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise SlackError("invalid_client_id") from None
        app = self.apps.get(str(client_id or ""))
        if app is None:
            raise SlackError("invalid_client_id")
        if client_secret != app.client_secret:
            raise SlackError("bad_client_secret")
        return app

    def _exchange_code(self, app: SlackApp, args: dict[str, Any]) -> dict[str, Any]:
        code = self.codes.get(str(args.get("code") or ""))
        if code is None or code.is_used or code.client_id != app.client_id:
            raise SlackError("invalid_code")
        if code.redirect_uri is not None and args.get("redirect_uri") != code.redirect_uri:
            raise SlackError("bad_redirect_uri")
        code.is_used = True
        answer = self._grant(app, code.team_id, code.scopes)
        answer["authed_user"] = {"id": self._id("U")}
        return answer

    def _refresh(self, app: SlackApp, args: dict[str, Any]) -> dict[str, Any]:
        refresh = self.refresh_tokens.get(str(args.get("refresh_token") or ""))
        if refresh is None or refresh.is_used or refresh.client_id != app.client_id:
            raise SlackError("invalid_refresh_token")
        refresh.is_used = True
        previous = self.tokens.get(refresh.access_token)
        if previous is not None:
            previous.is_superseded = True
        return self._grant(app, refresh.team_id, refresh.scopes)

    def _grant(self, app: SlackApp, team_id: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        """Issue a bot token (and with rotation a refresh token) and build the ``oauth.v2.access`` answer."""
        workspace = self.workspaces[team_id]
        answer: dict[str, Any] = {
            "app_id": app.app_id,
            "scope": ",".join(scopes),
            "token_type": "bot",
            "bot_user_id": workspace.bot_user_id,
            "team": {"id": workspace.team_id, "name": workspace.name},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        if app.token_rotation:
            access = f"xoxe.xoxb-1-{secrets.token_hex(20)}"
            refresh = f"xoxe-1-{secrets.token_hex(20)}"
            expires_at = self.clock() + ROTATION_EXPIRES_IN
            self.tokens[access] = SlackToken(access, team_id, scopes, app_id=app.app_id, expires_at=expires_at)
            self.refresh_tokens[refresh] = SlackRefreshToken(refresh, app.client_id, team_id, scopes, access)
            answer.update(access_token=access, refresh_token=refresh, expires_in=ROTATION_EXPIRES_IN)
        else:
            answer["access_token"] = self.issue_bot_token(team_id, scopes=scopes)
            self.tokens[answer["access_token"]].app_id = app.app_id
        return answer

    def _next_ts(self) -> str:
        """Message timestamps: ``<seconds>.<micro>``, strictly increasing like Slack's."""
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"


def _bearer(request: RecordedRequest) -> str | None:
    authorization = request.header("authorization") or ""
    return authorization[7:].strip() if authorization.startswith("Bearer ") else None


def slack_arguments(request: RecordedRequest) -> dict[str, Any]:
    """Slack reads arguments from the query string and from a form or JSON body alike."""
    args: dict[str, Any] = {name: values[-1] for name, values in request.query.items()}
    if isinstance(request.body, dict):
        args.update(request.body)
    return args


def _json_list(value: Any, error: str) -> list[dict[str, Any]]:
    """``attachments``/``blocks``: a JSON array, or a string holding one (form-encoded posts)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise SlackError(error) from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SlackError(error)
    return value


def _encode_cursor(channel_id: str) -> str:
    return base64.b64encode(f"team:{channel_id}".encode()).decode()
