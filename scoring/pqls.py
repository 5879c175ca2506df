"""The PQA / PQL list (DESIGN §1, §7): trial accounts ranked by conversion score, each with its users ranked by
champion and health score and their role in that account. One selector for the sales reps' page, the
`/api/v1/pqls/` API and its CSV export.

Paging is by keyset on (conversion score, account id), highest first, so page 100 costs what page 1 does and
rows do not shift while a rep pages through. Accounts a rep marked done or disqualified stay off the list until
their cooldown ends.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from accounts.models import Account, EndUser, Membership
from plgapp.models import Tenant
from scoring.models import GRADE_LETTERS, LeadDisposition, Score, score_dict

OWNER_PROPERTIES = ("owner_email", "owner")  # the account property that names its sales owner, first found
USERS_PER_ACCOUNT = 10
MAX_LIMIT = 500


class PqlQueryInvalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class PqlFilters:
    stages: tuple[str, ...] = ()  # empty: the tenant's trial stages
    min_score: float | None = None
    segment: str = ""
    owner: str = ""
    q: str = ""


@dataclass
class PqlUser:
    """One user of a listed account. With `as_stored` (the JSON API), `membership` and the scores' `reasons` and
    `details` are the stored JSON as it is (`orjson.Fragment`), not decoded values: see `account_users`."""

    id: int
    external_id: str | None
    email: str | None
    role: str | None
    membership: dict[str, Any] | orjson.Fragment
    health: dict[str, Any] | None
    champion: dict[str, Any] | None


@dataclass
class PqlAccount:
    rank_value: float
    account: Account
    conversion: dict[str, Any]
    owner: str
    users: list[PqlUser] = field(default_factory=list)

    @property
    def details(self) -> dict[str, Any]:
        return self.conversion.get("details") or {}

    @property
    def grade_letter(self) -> str:
        return GRADE_LETTERS.get(int(self.conversion.get("grade") or 0), "")

    @property
    def top_percent(self) -> int:
        """ "Top 7%": how few accounts score higher."""
        return max(1, 100 - int(self.conversion.get("percentile") or 0))


@dataclass
class PqlPage:
    rows: list[PqlAccount]
    next_cursor: str | None
    previous_cursor: str | None


def cursor_encode(value: float, account_id: int, direction: str) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{value!r}:{account_id}".encode()).decode().rstrip("=")


def cursor_decode(raw: str) -> tuple[str, float, int]:
    try:
        direction, value, account_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().split(":")
        if direction not in ("n", "p"):
            raise ValueError(direction)
        return direction, float(value), int(account_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise PqlQueryInvalid({"cursor": "not a cursor this list handed out; start from the first page"}) from exc


def _owner_sql() -> str:
    return "coalesce(" + ", ".join(f"a.properties->>'{key}'" for key in OWNER_PROPERTIES) + ")"


def _ranked_ids(
    tenant: Tenant, filters: PqlFilters, stages: Sequence[str], now: datetime, *, limit: int,
    after: tuple[float, int] | None = None, before: tuple[float, int] | None = None,
) -> list[tuple[float, int]]:  # fmt: skip
    """(score, account id) of one page, highest first, after (or before) a keyset position."""
    where = ["a.tenant_id = %(tenant)s", "a.stage = ANY(%(stages)s::text[])"]
    params: dict[str, Any] = {"stages": list(stages), "now": now, "limit": limit}
    if filters.min_score is not None:
        where.append("s.value >= %(min_score)s")
        params["min_score"] = filters.min_score
    if filters.segment:
        where.append("s.details->>'size_segment' = %(segment)s")
        params["segment"] = filters.segment
    if filters.owner:
        where.append(f"lower({_owner_sql()}) = lower(%(owner)s)")
        params["owner"] = filters.owner
    if filters.q:
        where.append("(a.name ILIKE %(q)s OR a.domain ILIKE %(q)s OR a.external_id ILIKE %(q)s)")
        params["q"] = "%" + filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    order = "DESC"
    if after is not None:
        where.append("(s.value, s.entity_id) < (%(value)s, %(id)s)")
        params["value"], params["id"] = after
    elif before is not None:
        where.append("(s.value, s.entity_id) > (%(value)s, %(id)s)")
        params["value"], params["id"] = before
        order = "ASC"
    statement = f"""
        SELECT s.value, a.id
        FROM {Account._meta.db_table} a
        JOIN {Score._meta.db_table} s
          ON s.tenant_id = a.tenant_id AND s.kind = 'conversion' AND s.entity_type = 'account' AND s.entity_id = a.id
        WHERE {" AND ".join(where)}
          AND NOT EXISTS (
            SELECT 1 FROM {LeadDisposition._meta.db_table} d
            WHERE d.tenant_id = %(tenant)s AND d.account_id = a.id AND d.hidden_until > %(now)s)
        ORDER BY s.value {order}, s.entity_id {order}
        LIMIT %(limit)s
    """  # noqa: S608 - identifiers from model metadata, values bound
    rows = [(float(value), int(pk)) for value, pk in Account.objects.sql(tenant, statement, params)]
    return rows if order == "DESC" else rows[::-1]


def trial_stages(tenant: Tenant) -> tuple[str, ...]:
    from scoring.services import settings_get

    return tuple(settings_get(tenant=tenant)["stages"]["trial"])


def pql_page(
    *, tenant: Tenant, filters: PqlFilters, cursor: str | None, limit: int, now: datetime, as_stored: bool = False
) -> PqlPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise PqlQueryInvalid({"limit": f"from 1 to {MAX_LIMIT}"})
    if filters.min_score is not None and not 0 <= filters.min_score <= 1:
        raise PqlQueryInvalid({"min_score": "a probability from 0 to 1"})
    stages = filters.stages or trial_stages(tenant)
    after = before = None
    if cursor:
        direction, value, account_id = cursor_decode(cursor)
        after, before = ((value, account_id), None) if direction == "n" else (None, (value, account_id))
    ranked = _ranked_ids(tenant, filters, stages, now, limit=limit + 1, after=after, before=before)
    more = len(ranked) > limit
    ranked = ranked[:limit] if before is None else ranked[-limit:]
    has_next = more if before is None else True
    has_previous = (cursor is not None) if before is None else more
    rows = pql_rows(tenant, ranked, as_stored=as_stored)
    return PqlPage(
        rows=rows,
        next_cursor=cursor_encode(*ranked[-1], "n") if ranked and has_next else None,
        previous_cursor=cursor_encode(*ranked[0], "p") if ranked and has_previous else None,
    )


def pql_iter(*, tenant: Tenant, filters: PqlFilters, now: datetime, batch: int = 500) -> Iterator[PqlAccount]:
    """Every account of the list, in order (the CSV export): keyset batches, so memory stays flat."""
    stages = filters.stages or trial_stages(tenant)
    after: tuple[float, int] | None = None
    while True:
        ranked = _ranked_ids(tenant, filters, stages, now, limit=batch, after=after)
        yield from pql_rows(tenant, ranked)
        if len(ranked) < batch:
            return
        after = ranked[-1]


def pql_rows(tenant: Tenant, ranked: Sequence[tuple[float, int]], *, as_stored: bool = False) -> list[PqlAccount]:
    ids = [pk for _value, pk in ranked]
    accounts = Account.objects.for_tenant(tenant).in_bulk(ids)
    conversions = _conversions(tenant, ids, as_stored=as_stored)
    users = account_users(tenant, ids, as_stored=as_stored)
    rows = []
    for value, pk in ranked:
        account = accounts.get(pk)
        if account is None:  # deleted between the two queries
            continue
        owner = next((str(account.properties[k]) for k in OWNER_PROPERTIES if account.properties.get(k)), "")
        rows.append(PqlAccount(value, account, conversions.get(pk, {}), owner, users.get(pk, [])))
    return rows


def _conversions(tenant: Tenant, account_ids: Sequence[int], *, as_stored: bool) -> dict[int, dict[str, Any]]:
    """{account id: its conversion score as the API shows it}, read by plain SQL like the users' scores (no model
    instances; the reasons as stored with `as_stored`). The details stay decoded: the list reads them."""
    statement = f"""
        SELECT s.entity_id, {_score_columns("s.")}
        FROM {Score._meta.db_table} s
        WHERE s.tenant_id = %(tenant)s AND s.kind = 'conversion' AND s.entity_type = 'account'
          AND s.entity_id = ANY(%(ids)s::bigint[])
    """  # noqa: S608 - identifiers from model metadata, values bound
    reasons = _stored if as_stored else _decoded
    found = Score.objects.sql(tenant, statement, {"ids": list(account_ids)})
    return {int(row[0]): score for row in found if (score := _score(row[1:], reasons, _decoded)) is not None}


def account_users(tenant: Tenant, account_ids: Sequence[int], *, per_account: int = USERS_PER_ACCOUNT,
                  include_former: bool = False, as_stored: bool = False) -> dict[int, list[PqlUser]]:  # fmt: skip
    """Each account's users ranked by champion score, then health, then email: who to call, with their role there.

    The database ranks each account's memberships and hands back only the first `per_account` with the columns
    shown (one statement, an index lookup per membership): building every membership, user and score as a model
    instance cost most of a page of large accounts (docs/benchmarks.md, PQL list).

    `as_stored`: the membership properties and the scores' reasons and details stay the JSON text PostgreSQL
    hands over, as `orjson.Fragment`s that orjson writes as they are. A page of the JSON API holds ~440 users
    with two scores each; decoding ~2,200 such values only to encode them again was a third of its Python time.
    For orjson only: templates and other encoders need the decoded values."""
    if not account_ids:
        return {}
    statement = f"""
        SELECT r.account_id, r.user_id, r.external_id, r.email, r.properties, r.properties ->> 'role',
               {_score_columns("r.h_")}, {_score_columns("r.c_")}
        FROM unnest(%(ids)s::bigint[]) AS acc(id)
        CROSS JOIN LATERAL (
            SELECT m.account_id, u.id AS user_id, u.external_id, u.email, m.properties,
                   {", ".join(f"h.{c} AS h_{c}" for c in SCORE_COLUMNS)},
                   {", ".join(f"c.{c} AS c_{c}" for c in SCORE_COLUMNS)}
            FROM {Membership._meta.db_table} m
            JOIN {EndUser._meta.db_table} u ON u.tenant_id = %(tenant)s AND u.id = m.end_user_id
            LEFT JOIN {Score._meta.db_table} h ON h.tenant_id = %(tenant)s AND h.kind = 'health'
                 AND h.entity_type = 'user' AND h.entity_id = m.end_user_id
            LEFT JOIN {Score._meta.db_table} c ON c.tenant_id = %(tenant)s AND c.kind = 'champion'
                 AND c.entity_type = 'membership' AND c.entity_id = m.id
            WHERE m.tenant_id = %(tenant)s AND m.account_id = acc.id {"" if include_former else "AND m.left_at IS NULL"}
            ORDER BY coalesce(c.value, -1) DESC, coalesce(h.value, -1) DESC, coalesce(u.email, '') COLLATE "C", m.id
            LIMIT %(per_account)s
        ) AS r
    """  # noqa: S608 - identifiers from model metadata, values bound
    params = {"ids": list(account_ids), "per_account": per_account}
    found: dict[int, list[PqlUser]] = {}
    decode = _stored if as_stored else _decoded
    for row in Membership.objects.sql(tenant, statement, params):
        account_id, user_id, external_id, email, properties, role = row[:6]
        found.setdefault(int(account_id), []).append(PqlUser(
            id=int(user_id), external_id=external_id, email=email, role=role,
            membership=decode(properties, "{}"), health=_score(row[6:14], decode, decode),
            champion=_score(row[14:22], decode, decode),
        ))  # fmt: skip
    return found


# A score's columns as plain SQL reads them for `_score` (Score.as_dict's fields).
SCORE_COLUMNS = ("value", "percentile", "grade", "reasons", "model_version", "rule_based", "computed_at", "details")


def _score_columns(prefix: str) -> str:
    """SCORE_COLUMNS as `prefix` names them ("s." or "r.h_"), the time written as the API writes it."""
    return ", ".join(_iso_utc(prefix + c) if c == "computed_at" else prefix + c for c in SCORE_COLUMNS)


def _iso_utc(column: str) -> str:
    """SQL for a timestamptz as `datetime.isoformat()` writes it in UTC, "+00:00" as "Z" (`score_dict`): microseconds
    only when there are some. Formatting ~880 score times a page took Python ~4 ms."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (f"""CASE WHEN mod(date_part('microseconds', {utc})::bigint, 1000000) = 0"""
            f""" THEN to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
            f""" ELSE to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END""")  # fmt: skip


def _decoded(value: Any, empty: str) -> Any:
    """A jsonb column read by plain SQL (Django's connection hands them over as text), decoded."""
    if value is None:
        return orjson.loads(empty)
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _stored(value: Any, empty: str) -> orjson.Fragment:
    """A jsonb column read by plain SQL, as the text stored (see `account_users`)."""
    if value is None:
        return orjson.Fragment(empty)
    return orjson.Fragment(value if isinstance(value, str | bytes) else orjson.dumps(value))


Decode = Callable[[Any, str], Any]  # a jsonb column and what NULL stands for -> `_decoded` or `_stored`


def _score(columns: Sequence[Any], reasons_as: Decode, details_as: Decode) -> dict[str, Any] | None:
    """A score's SCORE_COLUMNS as the API shows it; None if absent."""
    value, percentile, grade, reasons, model_version, rule_based, computed_at, details = columns
    if value is None:
        return None
    return score_dict(value=value, percentile=percentile, grade=grade, reasons=reasons_as(reasons, "[]"),
                      model_version=model_version, rule_based=rule_based, computed_at=computed_at,
                      details=details_as(details, "{}") if details not in (None, "{}", {}) else {})  # fmt: skip


CSV_COLUMNS = ("rank", "account_id", "external_id", "name", "domain", "stage", "conversion", "percentile", "grade",
               "activation", "size_segment", "product_qualified", "owner", "reasons", "top_users")  # fmt: skip


def csv_rows(rows: Iterator[PqlAccount]) -> Iterator[list[Any]]:
    yield list(CSV_COLUMNS)
    for rank, row in enumerate(rows, start=1):
        details, account = row.details, row.account
        users = "; ".join(f"{u.email or u.external_id} ({u.role or 'no role'})" for u in row.users[:3])
        reasons = "; ".join(str(r.get("text", "")) for r in row.conversion.get("reasons", [])[:3])
        yield [
            rank, account.pk, account.external_id or "", account.name, account.domain or "", account.stage or "",
            round(row.rank_value, 4), row.conversion.get("percentile", ""), row.conversion.get("grade", ""),
            details.get("activation", ""), details.get("size_segment") or "", details.get("product_qualified", ""),
            row.owner, reasons, users,
        ]  # fmt: skip
