"""Tenancy core: Tenant, TenantMember, ApiKey, and the fail-closed tenant-scoped base model.

Every tenant-owned model derives from TenantScopedModel. Its manager refuses to query without a
tenant: `Model.objects.for_tenant(tenant)` is the door, `Model.objects.unscoped()` the rare,
greppable exception (system sweeps, key lookup). See docs/adr/0001-tenant-scoping.md.
"""

from __future__ import annotations

import io
import re
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.validators import RegexValidator
from django.db import connection, models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from plgapp.keys import KeyKind
from plgapp.pgarrays import array_literal
from plgapp.roles import Role


class TenantScopeError(RuntimeError):
    """A tenant-owned table was queried without naming the tenant."""


SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1-50 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("A user needs an email address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def get_by_natural_key(self, username: str | None) -> User:
        # Sign-in is by email, whatever its case.
        return self.get(email__iexact=(username or "").strip())

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person who logs in to the web UI (TenantMember gives them a role in a tenant). Email is the login."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    objects: UserManager = UserManager()  # type: ignore[assignment,misc]

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email


class Tenant(models.Model):
    """Our customer: a company using the platform. Owns all product data below it."""

    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=50, unique=True, validators=[SLUG_VALIDATOR])
    ingest_rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Ingestion requests a minute per key; empty = INGEST_RATE_LIMIT_PER_MINUTE."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


def _tenant_id(tenant: Tenant | int) -> int:
    if isinstance(tenant, Tenant):
        if tenant.pk is None:
            raise TenantScopeError("cannot scope to an unsaved tenant")
        return int(tenant.pk)
    if isinstance(tenant, int) and not isinstance(tenant, bool):
        return tenant
    raise TenantScopeError(f"for_tenant() needs a Tenant or a tenant id, not {type(tenant).__name__}")


class TenantQuerySet[M: models.Model](models.QuerySet[M]):
    """A queryset that remembers its tenant, so rows created through it belong to that tenant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scoped_tenant_id: int | None = None

    def _clone(self) -> Self:
        clone = super()._clone()  # type: ignore[misc]  # private in the stubs, stable in Django
        clone._scoped_tenant_id = self._scoped_tenant_id
        return clone

    def _claim(self, obj: Any) -> None:
        if self._scoped_tenant_id is None:
            return
        if obj.tenant_id is None:
            obj.tenant_id = self._scoped_tenant_id
        elif obj.tenant_id != self._scoped_tenant_id:
            raise TenantScopeError(f"{type(obj).__name__} of tenant {obj.tenant_id} written through another tenant")

    def create(self, **kwargs: Any) -> M:
        if self._scoped_tenant_id is not None:
            given = kwargs.pop("tenant", None)
            given_id = kwargs.pop("tenant_id", None) or (given.pk if given is not None else None)
            if given_id is not None and given_id != self._scoped_tenant_id:
                raise TenantScopeError("create() names another tenant than the queryset's")
            kwargs["tenant_id"] = self._scoped_tenant_id
        return super().create(**kwargs)

    def bulk_create(self, objs: Iterable[M], *args: Any, **kwargs: Any) -> list[M]:
        objs = list(objs)
        for obj in objs:
            self._claim(obj)
        return super().bulk_create(objs, *args, **kwargs)


class TenantManager[M: models.Model](models.Manager[M]):
    """Fail-closed manager: `.for_tenant(t)` or `.unscoped()`; anything else raises TenantScopeError."""

    _queryset_class = TenantQuerySet

    def get_queryset(self) -> TenantQuerySet[M]:
        # Reverse-relation managers (`account.memberships.all()`) subclass this one. When the parent
        # row is itself tenant data, it names the tenant: scope to it. A parent outside any tenant
        # (a login user, who may belong to several tenants) names none: refuse, like any other query.
        instance = getattr(self, "instance", None)
        if instance is not None and hasattr(self, "core_filters") and isinstance(instance, TenantScopedModel):
            return self.for_tenant(instance.tenant_id)
        raise TenantScopeError(
            f"{self.model.__name__} is tenant-owned: use {self.model.__name__}.objects.for_tenant(tenant) "
            "(or .unscoped() for a deliberate cross-tenant query)"
        )

    def _base_queryset(self) -> TenantQuerySet[M]:
        return TenantQuerySet(model=self.model, using=self._db, hints=getattr(self, "_hints", None))

    def for_tenant(self, tenant: Tenant | int) -> TenantQuerySet[M]:
        tenant_id = _tenant_id(tenant)
        queryset = self._base_queryset().filter(tenant_id=tenant_id)
        queryset._scoped_tenant_id = tenant_id
        return queryset

    def none(self) -> TenantQuerySet[M]:
        """An empty queryset leaks nothing (library code such as schema generators asks for one)."""
        return self._base_queryset().none()

    def unscoped(self) -> TenantQuerySet[M]:
        """Every tenant's rows. Only for system-wide work (sweeps, key lookup); grep for it in review."""
        return self._base_queryset()

    # --- plain SQL, for the few hot paths where the ORM's query building costs more than the query ---

    def sql(self, tenant: Tenant | int, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run `statement` for one tenant. It must use `%(tenant)s` wherever it names the tenant; the door
        binds it (callers cannot pass their own). Lists go as array literals (plgapp.pgarrays): the statement
        names their type (`%(ids)s::bigint[]`) or compares them with a column. Returns the rows, if any."""
        bound = _bound(tenant, statement, params)
        with connection.cursor() as cursor:
            cursor.execute(statement, bound)
            return cursor.fetchall() if cursor.description else []

    def copy_out(self, tenant: Tenant | int, statement: str, params: dict[str, Any]) -> memoryview:
        """The rows of the query `statement` (bound as in `sql`) in COPY's binary format: each value as
        PostgreSQL sends it, without the text protocol's encoding (bytea travels as itself, not as twice as many
        hex digits). For reading many rows of large binary values; the caller parses the format. A view of the
        received bytes, not a copy of them (a load receives 100 MB and more)."""
        bound = _bound(tenant, statement, params)
        out = io.BytesIO()
        with connection.cursor() as cursor, connection.wrap_database_errors:
            query = cursor.cursor.mogrify(statement, bound).decode()
            cursor.cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", out)
        return out.getbuffer()

    def binary_rows(self, tenant: Tenant | int, statement: str, params: dict[str, Any]) -> list[list[Any]]:
        """The rows of the query `statement` (bound as in `sql`) by `copy_out`, each a list of its fields' bytes
        (None: NULL): an `array_send(...)` travels as itself, where `sql`'s text protocol sends twice as many hex
        digits that PostgreSQL encodes and the driver decodes. Texts come as UTF-8 bytes. For few rows of large
        values (`copy_fields` walks them in Python)."""
        return copy_fields(self.copy_out(tenant, statement, params))

    def set_by_pk(self, tenant: Tenant | int, fields: Sequence[str], rows: Sequence[Any], *, batch: int = 500) -> None:
        """Write `fields` of these model instances, one `UPDATE … FROM (VALUES …)` per batch — what
        `bulk_update` does with a CASE per row and field, which costs seconds of expression building and a
        slow plan at ingestion's batch sizes."""
        if not rows:
            return
        meta = self.model._meta
        columns = [meta.get_field(name) for name in fields]
        casts = [column.db_type(connection) for column in columns]
        assignments = ", ".join(f'"{column.column}" = v."{column.column}"' for column in columns)  # type: ignore[union-attr]
        names = ", ".join(f'"{column.column}"' for column in columns)  # type: ignore[union-attr]
        for start in range(0, len(rows), batch):
            params: dict[str, Any] = {}
            values = []
            for n, row in enumerate(rows[start : start + batch]):
                params[f"k{n}"] = row.pk
                holders = [f"%(k{n})s::bigint"]
                for m, (column, cast) in enumerate(zip(columns, casts, strict=True)):
                    params[f"v{n}_{m}"] = column.get_db_prep_save(getattr(row, column.attname), connection)  # type: ignore[union-attr]
                    holders.append(f"%(v{n}_{m})s::{cast}")
                values.append(f"({', '.join(holders)})")
            self.sql(
                tenant,
                f"UPDATE {meta.db_table} AS t SET {assignments} FROM (VALUES {', '.join(values)}) AS v(id, {names}) "  # noqa: S608
                "WHERE t.tenant_id = %(tenant)s AND t.id = v.id",
                params,
            )

    def insert(
        self,
        tenant: Tenant | int,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        conflict: Sequence[str] = (),
        conflict_where: str = "",
        update: Sequence[str] = (),
    ) -> None:
        """Insert rows (sequences of `columns` values) for one tenant in one statement: the rows travel as one
        JSON document that `jsonb_populate_recordset` reads with the table's own row type, so each value is read as
        its column's type. Values are what orjson writes: text, numbers, booleans, None, datetimes and dates (ISO
        8601), and dicts or lists for JSON columns. `conflict` / `update` as for copy(); `conflict_where` is the
        predicate of a partial unique index named by `conflict`.

        The small-batch path (an ingestion request): no staging table, so nothing to create, fill, empty and
        truncate at commit, and one round trip (docs/benchmarks.md). COPY stays the path for large batches."""
        if not rows:
            return
        column_list = ", ".join(columns)
        table = self.model._meta.db_table
        document = orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows]).decode()
        upsert = _on_conflict(conflict, conflict_where, update)
        self.sql(
            tenant,
            f"INSERT INTO {table} (tenant_id, {column_list}) SELECT %(tenant)s, {column_list} "  # noqa: S608 - model columns
            f"FROM jsonb_populate_recordset(NULL::{table}, %(rows)s::jsonb){upsert}",
            {"rows": document},
        )

    def copy(
        self,
        tenant: Tenant | int,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        conflict: Sequence[str] = (),
        update: Sequence[str] = (),
    ) -> None:
        """COPY rows into this model's table for one tenant: the door puts the tenant id first in every row.
        With `conflict` (the columns after tenant_id of a unique constraint), a row whose key is there already
        replaces its `update` columns instead (an upsert), or is dropped when `update` names none."""
        self.copy_lines(
            tenant, columns, ("\t".join(map(copy_text, row)) for row in rows), conflict=conflict, update=update
        )

    def copy_lines(
        self,
        tenant: Tenant | int,
        columns: Sequence[str],
        lines: Iterable[str],
        *,
        conflict: Sequence[str] = (),
        update: Sequence[str] = (),
        also: AlsoInto | None = None,
    ) -> None:
        """`copy` of rows already in COPY's text format (`copy_text` values joined by tabs, no newline): for a
        caller that knows which of its values can need escaping, writing many rows. `also`: some of the rows as
        written (inserted or updated) go on into another table, in the same statement."""
        prefix = f"{_tenant_id(tenant)}\t"
        text = "".join(prefix + line + "\n" for line in lines)
        if not text:
            return
        column_list = ", ".join(["tenant_id", *columns])
        table = self.model._meta.db_table
        upsert = _on_conflict(conflict, "", update)
        # Row-level security refuses COPY into the table itself (plgapp/rls.py): the rows go to a private staging
        # table of this session, then move in one INSERT, which the tenant policy checks row by row. ON COMMIT
        # DELETE ROWS empties the staging table at each commit without leaving dead rows behind.
        staging = f"plg_copy_{table}_{zlib.crc32(column_list.encode()):08x}"
        # No savepoint: a failure here fails the caller's transaction anyway. The staging table is made (if this
        # session has none yet) in the same round trip as the COPY: one simple query holding both statements.
        # The COPY goes through the driver's own cursor, which Django does not wrap: wrap_database_errors turns the
        # driver's errors into Django's (an outage into OperationalError, which callers answer with 503).
        with transaction.atomic(savepoint=False), connection.cursor() as cursor, connection.wrap_database_errors:
            cursor.cursor.copy_expert(
                f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "  # noqa: S608 - model columns
                f"SELECT {column_list} FROM {table} WITH NO DATA; COPY {staging} ({column_list}) FROM STDIN",
                io.StringIO(text),
            )
            moved = f"WITH moved AS (DELETE FROM {staging} RETURNING {column_list})"  # noqa: S608 - model columns
            insert = f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM moved{upsert}"  # noqa: S608
            if also is None:
                cursor.execute(f"{moved} {insert}")
                return
            # Data-modifying statements nest only at the top: the written rows are a second WITH of the same list.
            also_columns = ", ".join(["tenant_id", *also.columns])
            cursor.execute(
                f"{moved}, written AS ({insert} RETURNING {also_columns}) "  # noqa: S608 - model columns
                f"INSERT INTO {also.table} ({also_columns}) SELECT {also_columns} FROM written "
                f"WHERE {also.key} = ANY(%s::bigint[])",
                ["{" + ",".join(map(str, also.keys)) + "}"],
            )


@dataclass(frozen=True)
class AlsoInto:
    """For `copy_lines`: the rows just written whose `key` column holds one of `keys` are copied on into `table`
    (another table of tenant data), their `columns` (named alike in both tables) and tenant."""

    table: str
    columns: Sequence[str]
    key: str
    keys: Sequence[int]


_COPY_HEADER = 19  # binary COPY: signature (11 bytes), flags and header extension length (4 + 4)


def copy_fields(data: bytes | memoryview) -> list[list[memoryview | None]]:
    """The rows of a binary COPY (`TenantManager.copy_out`), each a list of its fields' bytes (None: NULL). For
    few rows of large values: the walk is a Python loop."""
    view, rows, position = memoryview(data), [], _COPY_HEADER
    while (fields := int.from_bytes(view[position : position + 2], "big", signed=True)) != -1:
        position += 2
        row: list[memoryview | None] = []
        for _ in range(fields):
            length = int.from_bytes(view[position : position + 4], "big", signed=True)
            position += 4
            row.append(None if length < 0 else view[position : position + length])
            position += max(length, 0)
        rows.append(row)
    return rows


def _bound(tenant: Tenant | int, statement: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a plain SQL statement on tenant data, with the tenant bound by the door."""
    if "%(tenant)s" not in statement or "tenant" in params:
        raise TenantScopeError("plain SQL on tenant data must say tenant_id = %(tenant)s; the door binds it")
    bound = {name: array_literal(value) if type(value) is list else value for name, value in params.items()}
    bound["tenant"] = _tenant_id(tenant)
    return bound


def _on_conflict(conflict: Sequence[str], where: str, update: Sequence[str]) -> str:
    """The ON CONFLICT tail of a bulk write: replace the `update` columns of a row whose key is there already, or
    drop the new row when `update` names none. `conflict` is the key after tenant_id; no conflict, no tail."""
    if not conflict:
        return ""
    assignments = ", ".join(f"{column} = EXCLUDED.{column}" for column in update)
    action = f"DO UPDATE SET {assignments}" if update else "DO NOTHING"
    predicate = f" WHERE {where}" if where else ""
    return f" ON CONFLICT ({', '.join(['tenant_id', *conflict])}){predicate} {action}"


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def copy_text(value: Any) -> str:
    """A value in COPY's text format: backslash, tab, newline and return escaped; None as \\N."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        # The usual case: nothing to escape. Four substring tests cost a tenth of one regex search.
        if "\\" not in value and "\t" not in value and "\n" not in value and "\r" not in value:
            return value
        return _COPY_SPECIAL.sub(lambda match: _COPY_ESCAPES[match.group()], value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class TenantScopedModel(models.Model):
    """Base of every tenant-owned table (a meta-test enforces it)."""

    # No index on tenant_id alone: every tenant table leads its own indexes with tenant_id (a test enforces it),
    # so one on the column alone would only be kept up to date on every write and never chosen.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False, db_index=False)

    objects: ClassVar[TenantManager[Any]] = TenantManager()

    class Meta:
        abstract = True


class TenantMember(TenantScopedModel):
    """A login user of a tenant and their role there."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[TenantMember]]  # inherited from TenantScopedModel; typed here

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="tenantmember_tenant_user_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}:{self.role}"


KEY_KIND_CHOICES = [(kind.value, kind.value.title()) for kind in KeyKind]


class ApiKey(TenantScopedModel):
    """A write key (ingestion) or secret key (management API). The key itself is never stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=KEY_KIND_CHOICES)
    prefix = models.CharField(max_length=20, help_text="The first characters of the key, to recognize it.")
    hash = models.CharField(max_length=64, help_text="sha256 of the key, hex.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[TenantManager[ApiKey]]  # inherited from TenantScopedModel; typed here

    class Meta:
        constraints = [
            # Global on purpose: a key is looked up by its hash before we know its tenant.
            models.UniqueConstraint(fields=["hash"], name="apikey_hash_unique"),
        ]
        indexes = [models.Index(fields=["tenant", "created_at"], name="apikey_tenant_created")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.kind})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WorkerHeartbeat(models.Model):
    """Last time a worker consumed from each Celery queue (system table, not tenant data)."""

    queue = models.CharField(max_length=100, primary_key=True)
    hostname = models.CharField(max_length=255)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.queue}@{self.hostname}"
