"""Identity resolution: which user (userId / email) or account (accountId / domain) a call means.

One Resolver per kind and request. `plan()` walks the references of a request in order against the
rows they can match (fetched in one query) and decides — in memory — what to create, which
identifiers move, and which records turn out to be one (see docs/adr/0004-identity-resolution.md):

- the stable id (userId / accountId) decides who someone is; email / domain is an attribute that
  can change and can move to another record;
- a record known only by its email/domain that gets a stable id through a call that also names an
  existing record with that id is the same person: it is merged into that record;
- a record that already has another stable id keeps it and loses the email/domain to the new owner.

`flush()` then applies the plan with a handful of statements: identifier moves, merges, and one
multi-row insert for everything new. A concurrent request that created the same identifier first
makes the insert fail with IntegrityError; the ingestion service retries the whole request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from accounts.models import Account, EndUser
from plgapp.models import Tenant


def prefetch_together(tenant: Tenant, *wanted: tuple[Resolver, Iterable[tuple[str | None, str | None]]]) -> None:
    """Load the rows these (external id, email/domain) references can match, for several resolvers (users and
    accounts) in one round trip. Plain SQL through the tenant door: the ORM's query building costs more than this
    lookup, which every ingestion request makes."""
    params: dict[str, Any] = {}
    parts = [part for n, (resolver, refs) in enumerate(wanted) if (part := resolver._prefetch_query(n, refs, params))]
    if not parts:
        return
    rows = EndUser.objects.sql(tenant, " UNION ALL ".join(parts), params)
    for n, pk, external_id, alt, first_seen, last_seen in rows:
        node = Node(pk=pk, external_id=external_id, alt=alt, original_alt=alt, seen=(first_seen, last_seen))
        wanted[n][0]._register(node)


@dataclass(eq=False)
class Node:
    pk: int | None
    external_id: str | None
    alt: str | None
    parent: Node | None = None
    original_alt: str | None = None
    merged_into: Node | None = None
    # (first_seen_at, last_seen_at) of a user's row as the prefetch read it; times only ever widen, so what an
    # earlier read says is covered stays covered (users_seen skips those users). (None, None) for accounts; None
    # for rows this request creates.
    seen: tuple[datetime | None, datetime | None] | None = None
    alt_dirty: bool = False
    external_dirty: bool = False

    def root(self) -> Node:
        node = self
        while node.parent is not None:
            node = node.parent
        return node


@dataclass
class Merge:
    survivor: Node
    loser: Node


@dataclass
class Resolver:
    tenant: Tenant
    model: type[EndUser] | type[Account]
    alt_field: str  # "email" or "domain"
    by_external: dict[str, Node] = field(default_factory=dict)
    by_alt: dict[str, Node] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    # pks whose row flush() created or whose identifiers it changed: more than events changed for them (marks).
    changed: set[int] = field(default_factory=set)

    @classmethod
    def for_users(cls, tenant: Tenant) -> Resolver:
        return cls(tenant=tenant, model=EndUser, alt_field="email")

    @classmethod
    def for_accounts(cls, tenant: Tenant) -> Resolver:
        return cls(tenant=tenant, model=Account, alt_field="domain")

    # --- planning ------------------------------------------------------------------------------

    def prefetch(self, refs: Iterable[tuple[str | None, str | None]]) -> None:
        prefetch_together(self.tenant, (self, refs))

    def _prefetch_query(self, n: int, refs: Iterable[tuple[str | None, str | None]],
                        params: dict[str, Any]) -> str | None:  # fmt: skip
        refs = list(refs)
        external_ids = list({ext for ext, _alt in refs if ext})
        alts = list({alt for _ext, alt in refs if alt})
        seen = "first_seen_at, last_seen_at" if self.model is EndUser else "NULL::timestamptz, NULL::timestamptz"
        select = f"SELECT {n}, id, external_id, {self.alt_field}::text, {seen} FROM {self.model._meta.db_table} "  # noqa: S608
        # One branch per identifier, never `external_id = ANY(…) OR email = ANY(…)`: PostgreSQL plans that OR as
        # bitmap paths and estimates every array element for each, which took 2.5-4.5 ms of planning for 67 ids
        # (0.35 ms as separate branches; docs/benchmarks.md), and every ingestion request sends this query.
        branches = []
        if external_ids:
            params[f"ids{n}"] = external_ids
            branches.append(f"{select}WHERE tenant_id = %(tenant)s AND external_id = ANY(%(ids{n})s::text[])")
        if alts:
            params[f"alts{n}"] = alts
            # A row both identifiers match comes once: from the first branch (a NULL external_id is not matched).
            not_matched = f" AND (external_id <> ALL(%(ids{n})s::text[])) IS NOT FALSE" if external_ids else ""
            where = f"tenant_id = %(tenant)s AND {self.alt_field} = ANY(%(alts{n})s::text[]){not_matched}"
            branches.append(f"{select}WHERE {where}")
        return " UNION ALL ".join(branches) or None

    def _register(self, node: Node) -> None:
        self.nodes.append(node)
        if node.external_id:
            self.by_external[node.external_id] = node
        if node.alt:
            self.by_alt[node.alt] = node

    def _set_alt(self, node: Node, alt: str) -> None:
        holder = self.by_alt.get(alt)
        if holder is not None and holder.root() is not node:
            holder.root().alt = None
            holder.root().alt_dirty = True
        if node.alt and self.by_alt.get(node.alt) is node:
            del self.by_alt[node.alt]
        node.alt = alt
        node.alt_dirty = True
        self.by_alt[alt] = node

    def _merge(self, survivor: Node, loser: Node) -> None:
        if survivor.pk is None and loser.pk is not None:
            # Keep the existing row: it carries history. The pending node only brought identifiers.
            survivor, loser = loser, survivor
        loser.parent = survivor
        if loser.external_id and survivor.external_id is None:
            survivor.external_id = loser.external_id
            survivor.external_dirty = True
            self.by_external[loser.external_id] = survivor
        if loser.pk is not None:
            self.merges.append(Merge(survivor=survivor, loser=loser))
        if loser.alt and survivor.alt is None:
            alt = loser.alt
            loser.alt = None
            self._set_alt(survivor, alt)

    def find(self, external_id: str | None, alt: str | None) -> Node | None:
        """The existing record a reference names, without creating or changing anything."""
        if external_id:
            node = self.by_external.get(external_id)
            return node.root() if node is not None else None
        node = self.by_alt.get(alt) if alt else None
        return node.root() if node is not None else None

    def resolve(self, external_id: str | None, alt: str | None) -> Node:
        by_id = self.by_external[external_id].root() if external_id and external_id in self.by_external else None
        by_alt = self.by_alt[alt].root() if alt and alt in self.by_alt else None
        if by_id is None and by_alt is None:
            node = Node(pk=None, external_id=external_id, alt=alt)
            self._register(node)
            return node
        if by_id is not None and (by_alt is None or by_alt is by_id):
            if alt and by_id.alt != alt:
                self._set_alt(by_id, alt)
            return by_id
        if by_id is None:
            assert by_alt is not None
            if external_id is None or by_alt.external_id is None:
                if external_id:
                    by_alt.external_id = external_id
                    by_alt.external_dirty = True
                    self.by_external[external_id] = by_alt
                return by_alt
            # The email/domain belongs to someone with another stable id: it moves to a new record.
            node = Node(pk=None, external_id=external_id, alt=None)
            self._register(node)
            self._set_alt(node, alt)  # type: ignore[arg-type]
            return node
        assert by_id is not None
        assert by_alt is not None
        if by_alt.external_id is None:
            self._merge(survivor=by_id, loser=by_alt)
            if alt and by_id.alt != alt:
                self._set_alt(by_id, alt)
        else:
            self._set_alt(by_id, alt)  # type: ignore[arg-type]
        return by_id

    # --- applying ------------------------------------------------------------------------------

    def flush(self, *, merge: Callable[[int, int], None], defaults: Callable[[], dict[str, Any]]) -> None:
        """Apply the plan: free moved identifiers, merge, update, insert; every node gets its pk."""
        roots = [node for node in self.nodes if node.parent is None]
        if not self.merges and not any(node.pk is None or node.alt_dirty or node.external_dirty for node in roots):
            return  # nearly every request: all known, nothing moved (a queryset costs more to build than this test)
        manager = self.model.objects.for_tenant(self.tenant)
        losing_alt = [n.pk for n in roots if n.pk is not None and n.alt_dirty and n.original_alt is not None]
        if losing_alt:
            manager.filter(pk__in=losing_alt).update(**{self.alt_field: None})
            self.changed.update(losing_alt)
        for item in self.merges:
            merge(item.survivor.root().pk, item.loser.pk)  # type: ignore[arg-type]
        for node in roots:
            if node.pk is not None and (node.alt_dirty or node.external_dirty):
                changes: dict[str, Any] = {}
                if node.alt_dirty and node.alt is not None:
                    changes[self.alt_field] = node.alt
                if node.external_dirty:
                    changes["external_id"] = node.external_id
                if changes:
                    manager.filter(pk=node.pk).update(**changes)
                    self.changed.add(node.pk)
        pending = [node for node in roots if node.pk is None]
        if pending:
            rows = [
                self.model(
                    tenant=self.tenant,
                    external_id=node.external_id,
                    **{self.alt_field: node.alt},
                    **defaults(),
                )
                for node in pending
            ]
            created = manager.bulk_create(rows)  # type: ignore[arg-type]
            for node, row in zip(pending, created, strict=True):
                node.pk = row.pk
                self.changed.add(row.pk)

    def seen_as_read(self) -> dict[int, tuple[datetime | None, datetime | None]]:
        """pk -> (first_seen_at, last_seen_at) as the prefetch read them, for the rows that existed."""
        return {node.pk: node.seen for node in self.nodes if node.pk is not None and node.seen is not None}

    def pk_of(self, node: Node) -> int:
        pk = node.root().pk
        assert pk is not None, "flush() first"
        return pk
