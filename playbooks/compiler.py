"""The SQL backend of the condition language: a parsed condition as a filter on Account, EndUser or Membership
querysets, with exactly the semantics of playbooks.conditions (read its docstring; the property test
tests/test_conditions_agree.py holds both backends to it).

Every leaf compiles to a boolean that is never NULL — `COALESCE(P(X), false)`, or `X IS NOT NULL` for exists, where X
is the typed value (NULL when missing or of another kind) — so NOT, AND and OR keep two-valued logic. Builtin columns
compile to `col IS NOT NULL AND P(col)` instead, which an index on the column can serve.
Typed values of JSON properties are CASE expressions that only cast what `jsonb_typeof` says fits, so no stored
value can make a query fail. Scores, activation and event counts are correlated subqueries through the tenant
door, constrained to the outer row's tenant too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    DateTimeField,
    DecimalField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    TextField,
    Value,
    When,
    lookups,
)
from django.db.models.fields.json import DataContains
from django.db.models.functions import Abs, Cast, Coalesce, StrIndex

from playbooks import conditions as c
from plgapp.models import Tenant
from scoring.models import Score
from signals.models import DailyRollup

# root -> entity -> (ORM prefix of its columns, the outer column holding its id)
ROOTS: dict[str, dict[str, tuple[str, str]]] = {
    "account": {"account": ("", "pk")},
    "user": {"user": ("", "pk")},
    "membership": {"account": ("account__", "account_id"), "user": ("end_user__", "end_user_id"),
                   "membership": ("", "pk")},
}  # fmt: skip
ROOT_NAMES = {"account": "an account", "user": "a user", "membership": "a membership (users_where)"}


class _Numeric(DecimalField):
    """Unbounded `numeric` (a DecimalField casts to numeric(p, s), which would round or overflow)."""

    def cast_db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "numeric"


def condition_filter(condition: c.Condition, *, tenant: Tenant, root: str, now: datetime) -> Q:
    """A filter for `Model.objects.for_tenant(tenant)` of the root (Account for "account", EndUser for "user",
    Membership for "membership") keeping the rows that match `condition` at `now`. It also names the tenant
    itself, so it matches no other tenant's rows whatever queryset it is applied to. ConditionInvalid when the
    condition reads an entity the root does not have (a user field on an account)."""
    if root not in ROOTS:
        raise ValueError(f"root is account, user or membership, not {root!r}")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    compiler = _Compiler(tenant=tenant, root=root, now=now)
    return Q(tenant_id=tenant.pk) & compiler.compile(condition, "")


def _true() -> Q:
    return Q(Value(True, output_field=BooleanField()))


def _false() -> Q:
    return Q(Value(False, output_field=BooleanField()))


def _present(value: Any) -> Q:
    return Q(lookups.IsNull(value, False))


def _float(number: float) -> Cast:
    return Cast(Value(float(number)), FloatField())


def _compare(op: str, left: Any, right: Any) -> Q:
    """left op right for eq/neq/gt/gte/lt/lte; non-null when both sides are."""
    if op == "neq":
        return ~Q(lookups.Exact(left, right))
    lookup = {"eq": lookups.Exact, "gt": lookups.GreaterThan, "gte": lookups.GreaterThanOrEqual,
              "lt": lookups.LessThan, "lte": lookups.LessThanOrEqual}[op]  # fmt: skip
    return Q(lookup(left, right))


class _Compiler:
    def __init__(self, *, tenant: Tenant, root: str, now: datetime) -> None:
        self.tenant = tenant
        self.root = root
        self.now = now
        self.today = now.astimezone(UTC).date()

    def compile(self, condition: c.Condition, path: str) -> Q:
        match condition:
            case c.All(items):
                if not items:
                    return _true()
                result = self.compile(items[0], f"{path}.all.0".lstrip("."))
                for n, item in enumerate(items[1:], start=1):
                    result &= self.compile(item, f"{path}.all.{n}".lstrip("."))
                return result
            case c.Any(items):
                if not items:
                    return _false()
                result = self.compile(items[0], f"{path}.any.0".lstrip("."))
                for n, item in enumerate(items[1:], start=1):
                    result |= self.compile(item, f"{path}.any.{n}".lstrip("."))
                return result
            case c.Not(item):
                return ~self.compile(item, f"{path}.not".lstrip("."))
            case c.EventTest():
                return self._event(condition, path)
            case c.FieldTest():
                return self._field(condition, path)
        raise TypeError(f"not a condition: {condition!r}")

    def _entity(self, entity: str, path: str) -> tuple[str, str]:
        available = ROOTS[self.root]
        if entity not in available:
            raise c.ConditionInvalid({path: f"{entity} data cannot be read in a condition on {ROOT_NAMES[self.root]}"})
        return available[entity]

    # --- events --------------------------------------------------------------------------------------------

    def _event(self, test: c.EventTest, path: str) -> Q:
        _prefix, id_column = self._entity(test.of, f"{path}.of".lstrip("."))
        rows = DailyRollup.objects.for_tenant(self.tenant).filter(
            tenant_id=OuterRef("tenant_id"),
            name=test.event,
            day__gt=self.today - timedelta(days=test.within_days),
            day__lte=self.today,
        )
        if test.of == "account":
            rows = rows.filter(account_id=OuterRef(id_column), end_user_id=0)
        elif test.of == "user":
            rows = rows.filter(account_id=0, end_user_id=OuterRef(id_column))
        else:  # the user's events in that account: the pair level
            rows = rows.filter(account_id=OuterRef("account_id"), end_user_id=OuterRef("end_user_id"))
        total = rows.order_by().values("name").annotate(total=Sum("count")).values("total")
        count = Coalesce(Subquery(total, output_field=IntegerField()), Value(0))
        return _compare(test.op, count, _float(test.value))

    # --- fields --------------------------------------------------------------------------------------------

    def _field(self, test: c.FieldTest, path: str) -> Q:
        ref = c.field_ref(test.field)
        prefix, id_column = self._entity(ref.entity, f"{path}.field".lstrip("."))
        if ref.source == "property":
            return _PropertyLeaf(F(f"{prefix}properties"), ref.name, self.now).compile(test.op, test.value)
        if ref.source == "score":
            return _number_leaf(self._score(ref.entity, ref.name, id_column), test.op, test.value)
        if ref.name == "activation":
            activation = Coalesce(
                self._activation("conversion", id_column),
                self._activation("churn", id_column),
                output_field=FloatField(),
            )
            return _number_leaf(activation, test.op, test.value)
        column = f"{prefix}{ref.name}"
        if ref.builtin_kind == "text":
            return _text_column_leaf(column, test.op, test.value)
        return _datetime_column_leaf(column, test.op, test.value, self.now)

    def _scores(self, entity: str, kind: str, id_column: str) -> Any:
        return Score.objects.for_tenant(self.tenant).filter(
            tenant_id=OuterRef("tenant_id"), kind=kind, entity_type=entity, entity_id=OuterRef(id_column)
        )

    def _score(self, entity: str, kind: str, id_column: str) -> Subquery:
        return Subquery(self._scores(entity, kind, id_column).values("value")[:1], output_field=FloatField())

    def _activation(self, kind: str, id_column: str) -> Subquery:
        details = _json_get(F("details"), "activation")
        rows = self._scores("account", kind, id_column).annotate(activation=_json_number(details))
        return Subquery(rows.values("activation")[:1], output_field=FloatField())


# --- builtin columns (plain Q on the column, so an index on it can serve) -------------------------------------


def _text_column_leaf(column: str, op: str, literal: Any) -> Q:
    present = Q(**{f"{column}__isnull": False}) & ~Q(**{column: ""})  # an empty builtin text is missing
    if op == "exists":
        return present
    if op == "not_exists":
        return ~present
    if op in ("eq", "neq"):
        if not isinstance(literal, str):
            return _false()
        return present & (Q(**{column: literal}) if op == "eq" else ~Q(**{column: literal}))
    if op in ("in", "not_in"):
        if not isinstance(literal[0], str):
            return _false()
        inside = Q(**{f"{column}__in": list(literal)})
        return present & (inside if op == "in" else ~inside)
    if op == "contains":
        return present & Q(lookups.GreaterThan(StrIndex(F(column), Value(literal)), 0))
    if op == "starts_with":
        return present & Q(_starts_with(F(column), literal))
    return _false()  # texts are not numbers or datetimes


def _datetime_column_leaf(column: str, op: str, literal: Any, now: datetime) -> Q:
    present = Q(**{f"{column}__isnull": False})
    if op == "exists":
        return present
    if op == "not_exists":
        return ~present
    if op in c.ORDER_OPS and isinstance(literal, str):
        bound = c.literal_datetime(literal)
        return present & Q(**{f"{column}__{op}": bound}) if bound is not None else _false()
    if op == "within_last_days":
        return present & Q(**{f"{column}__gte": now - timedelta(days=literal), f"{column}__lte": now})
    if op == "more_than_days_ago":
        return present & Q(**{f"{column}__lt": now - timedelta(days=literal)})
    return _false()


# --- typed values: numbers (scores, activation, JSON numbers) and JSON properties ------------------------------


def _known(predicate: Q) -> Q:
    """The predicate, False where it is NULL (its value was missing): COALESCE(predicate, false)."""
    return Q(Coalesce(ExpressionWrapper(predicate, output_field=BooleanField()), Value(False)))


def _in(value: Any, items: Any, op: str) -> Q:
    """in / not_in on a typed value (NULL = missing, so neither holds)."""
    inside = Q(lookups.In(value, [float(item) if c.is_number(item) else item for item in items]))
    return _known(inside if op == "in" else ~inside)


def _number_leaf(value: Any, op: str, literal: Any) -> Q:
    """A leaf on a nullable double (NULL = missing)."""
    if op == "exists":
        return _present(value)
    if op == "not_exists":
        return ~_present(value)
    if op in ("eq", "neq", *c.ORDER_OPS) and c.is_number(literal):
        return _known(_compare(op, value, _float(literal)))
    if op in ("in", "not_in") and c.is_number(literal[0]):
        return _in(value, literal, op)
    return _false()


def _json_get(source: Any, key: str) -> Func:
    # jsonb_extract_path with a text key: `->` through Django's KeyTransform would read a key such as "0" as
    # an array index.
    return Func(source, Value(key), function="jsonb_extract_path", output_field=JSONField())


def _typeof(value: Any) -> Func:
    return Func(value, function="jsonb_typeof", output_field=CharField())


def _when_type(value: Any, kinds: str, then: Any, output_field: Any) -> Case:
    return Case(When(lookups.Exact(_typeof(value), kinds), then=then), default=None, output_field=output_field)


def _json_number(value: Any) -> Case:
    """A JSON number as a double; NULL for anything else or beyond ±1e300. Rounded to 330 places first: a
    tiny number such as 1e-400 then reads as 0 (as Python's json does) instead of failing the cast."""
    numeric = Cast(value, _Numeric())
    within = lookups.LessThanOrEqual(Abs(numeric), Cast(Value(str(c.NUMBER_LIMIT)), _Numeric()))
    rounded = Func(numeric, Value(330), function="round", output_field=_Numeric())
    inner = Case(When(within, then=Cast(rounded, FloatField())), default=None, output_field=FloatField())
    return _when_type(value, "number", inner, FloatField())


def _starts_with(text: Any, prefix: str) -> Func:
    return Func(text, Value(prefix), function="starts_with", output_field=BooleanField())


class _PropertyLeaf:
    """Typed reads of one key of a JSON properties column (NULL when missing or of another kind)."""

    def __init__(self, column: Any, key: str, now: datetime) -> None:
        self.now = now
        self.value = _json_get(column, key)
        raw_text = Func(column, Value(key), function="jsonb_extract_path_text", output_field=TextField())
        self.text = _when_type(self.value, "string", raw_text, TextField())
        self.number = _json_number(self.value)
        self.boolean = _when_type(self.value, "boolean", Cast(self.value, BooleanField()), BooleanField())
        self.list = _when_type(self.value, "array", self.value, JSONField())
        cut = Func(
            raw_text, Value(c.FRACTION_BEYOND_MICROSECONDS), Value("\\1"), function="regexp_replace",
            output_field=TextField(),
        )  # fmt: skip
        is_datetime = (
            Q(lookups.Exact(_typeof(self.value), "string"))
            & Q(lookups.Regex(raw_text, f"^({c.DATETIME_PATTERN})$"))
            & Q(Func(cut, Value("timestamptz"), function="pg_input_is_valid", output_field=BooleanField()))
        )
        self.datetime = Case(
            When(is_datetime, then=Cast(cut, DateTimeField())), default=None, output_field=DateTimeField()
        )

    def _typed(self, literal: Any) -> Any:
        kind = c.scalar_kind(literal)
        return {"text": self.text, "number": self.number, "boolean": self.boolean}[kind or "text"]

    def _literal(self, literal: Any) -> Any:
        if c.is_number(literal):
            return _float(literal)
        return Value(literal, output_field=BooleanField() if isinstance(literal, bool) else TextField())

    def compile(self, op: str, literal: Any) -> Q:
        if op in c.PRESENCE_OPS:
            fits = _known(Q(lookups.In(_typeof(self.value), ["string", "boolean", "array"])))
            exists = fits | _present(self.number)
            return exists if op == "exists" else ~exists
        if op in ("eq", "neq"):
            typed = self._typed(literal)
            return _known(_compare(op, typed, self._literal(literal)))
        if op in ("in", "not_in"):
            return _in(self._typed(literal[0]), literal, op)
        if op in c.ORDER_OPS:
            if c.is_number(literal):
                return _known(_compare(op, self.number, _float(literal)))
            bound = c.literal_datetime(literal)
            if bound is None:
                return _false()
            return _known(_compare(op, self.datetime, Value(bound, output_field=DateTimeField())))
        if op == "contains":
            in_text = _known(Q(lookups.GreaterThan(StrIndex(self.text, Value(literal)), 0)))
            return in_text | _known(Q(DataContains(self.list, [literal])))
        if op == "starts_with":
            return _known(Q(_starts_with(self.text, literal)))
        if op in c.RELATIVE_OPS:
            since = Value(self.now - timedelta(days=literal), output_field=DateTimeField())
            if op == "more_than_days_ago":
                return _known(Q(lookups.LessThan(self.datetime, since)))
            now = Value(self.now, output_field=DateTimeField())
            return _known(
                Q(lookups.GreaterThanOrEqual(self.datetime, since)) & Q(lookups.LessThanOrEqual(self.datetime, now))
            )
        raise ValueError(f"unknown operator {op!r}")
