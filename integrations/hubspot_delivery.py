"""HubSpot through a connection (issue 6, DESIGN §11): list membership by contact email, and tasks.

- `list_change`: desired state, so idempotent — the contact is found by email (created when missing, for an
  add), then added to / removed from a v3 list (MANUAL or SNAPSHOT) by record id.
- `task_create`: not idempotent. Every task carries a marker token of its run in its body; each attempt first
  searches for a task with that marker and returns it when found, so a retry after a timeout or a crash
  confirms instead of creating a second task. The owner comes from an email (an account property such as
  the owner's email, or a fixed one); the company is found by domain or created; the task is associated with
  the company and the contacts involved.
Every call: the tenant's HubSpot cooldown (set on each 429) and a request window per connection
(`HUBSPOT_REQUESTS_PER_10_SECONDS`), searches also `HUBSPOT_SEARCHES_PER_SECOND`; a timeout on every call.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.conf import settings
from hubspot.crm import companies, contacts
from hubspot.crm.objects import tasks

from integrations import clients, limits
from integrations.crypto import CredentialsUnreadable
from integrations.delivery import _after, _sandboxed, resolve
from integrations.models import Connection, ConnectionMode, Provider
from integrations.oauth import OAuthError, usable_credentials

TASK_TO_CONTACT, TASK_TO_COMPANY = 204, 192  # HUBSPOT_DEFINED association types


class _Stop(Exception):
    """A call did not succeed: its classified outcome ends this delivery."""

    def __init__(self, outcome: clients.Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class _Calls:
    """The SDK client of one connection, with the limits checked before each request."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        try:
            token = usable_credentials(connection)["access_token"]
        except OAuthError as exc:
            raise _Stop(clients.Outcome("auth", str(exc))) from None
        except (CredentialsUnreadable, KeyError) as exc:
            raise _Stop(clients.Outcome("auth", f"unreadable credentials: {exc}")) from None
        self.client = clients.hubspot_client(token)

    def call(self, function: Any, *args: Any, search: bool = False, **kwargs: Any) -> Any:
        tenant_id = self.connection.tenant_id
        left = limits.cooldown_left(tenant_id, Provider.HUBSPOT)
        if left > 0:
            raise _Stop(clients.Outcome("rate_limited", "HubSpot asked us to wait", retry_after=left))
        wait = limits.window(tenant_id, Provider.HUBSPOT, f"requests:{self.connection.pk}",
                             settings.HUBSPOT_REQUESTS_PER_10_SECONDS, 10)  # fmt: skip
        if not wait and search:
            wait = limits.window(tenant_id, Provider.HUBSPOT, f"search:{self.connection.pk}",
                                 settings.HUBSPOT_SEARCHES_PER_SECOND, 1)  # fmt: skip
        if wait:
            raise _Stop(clients.Outcome("rate_limited", "HubSpot request budget used up", retry_after=wait))
        try:
            return function(*args, _request_timeout=clients.timeout(), **kwargs)
        except Exception as exc:
            raise _Stop(clients.hubspot_error(exc)) from None

    def contact_id(self, email: str, *, create: bool) -> str | None:
        try:
            found = self.call(self.client.crm.contacts.basic_api.get_by_id, email, id_property="email")
            return str(found.id)
        except _Stop as stop:
            if "404" not in stop.outcome.message:
                raise
        if not create:
            return None
        try:
            made = self.call(self.client.crm.contacts.basic_api.create,
                             contacts.SimplePublicObjectInputForCreate(properties={"email": email}))  # fmt: skip
            return str(made.id)
        except _Stop as stop:  # created meanwhile (409 names the existing id)
            existing = re.search(r"Existing ID: (\d+)", stop.outcome.message)
            if existing:
                return existing.group(1)
            raise

    def owner_id(self, email: str) -> str | None:
        page = self.call(self.client.crm.owners.owners_api.get_page, email=email, limit=1)
        return str(page.results[0].id) if page.results else None

    def company_id(self, domain: str, name: str) -> str:
        request = companies.PublicObjectSearchRequest(
            filter_groups=[companies.FilterGroup(filters=[companies.Filter(property_name="domain", operator="EQ",
                                                                           value=domain)])],
            limit=1, properties=["domain", "name"],
        )  # fmt: skip
        found = self.call(self.client.crm.companies.search_api.do_search, request, search=True)
        if found.results:
            return str(found.results[0].id)
        new = companies.SimplePublicObjectInputForCreate(properties={"domain": domain, "name": name})
        made = self.call(self.client.crm.companies.basic_api.create, new)
        return str(made.id)

    def task_with_marker(self, marker: str) -> str | None:
        request = tasks.PublicObjectSearchRequest(
            filter_groups=[tasks.FilterGroup(filters=[tasks.Filter(property_name="hs_task_body",
                                                                   operator="CONTAINS_TOKEN", value=marker)])],
            limit=1, properties=["hs_task_subject"],
        )  # fmt: skip
        found = self.call(self.client.crm.objects.tasks.search_api.do_search, request, search=True)
        return str(found.results[0].id) if found.results else None


def _start(tenant_id: int, connection_id: int | None) -> tuple[Connection | None, clients.Outcome]:
    return resolve(tenant_id, Provider.HUBSPOT, connection_id)


def list_change(*, tenant_id: int, connection_id: int | None, list_id: str, email: str, add: bool,
                run_id: int | None = None) -> clients.Outcome:  # fmt: skip
    connection, refused = _start(tenant_id, connection_id)
    if connection is None:
        return refused
    operation = "lists.memberships.add" if add else "lists.memberships.remove"
    if connection.mode == ConnectionMode.SANDBOX:
        return _sandboxed(connection, operation, {"list_id": list_id, "email": email}, run_id)
    try:
        calls = _Calls(connection)
        record = calls.contact_id(email, create=add)
        if record is None:  # removing someone HubSpot does not know: already the desired state
            return clients.Outcome("ok", body={"list_id": list_id, "email": email, "contact": None})
        api = calls.client.crm.lists.memberships_api
        answer = calls.call(api.add if add else api.remove, list_id, [record])
    except _Stop as stop:
        return _after(connection, stop.outcome)
    return clients.Outcome("ok", body={"list_id": list_id, "contact": record, "answer": answer.to_dict()})


def task_create(*, tenant_id: int, connection_id: int | None, task: dict[str, Any],
                run_id: int | None = None) -> clients.Outcome:  # fmt: skip
    """`task`: subject, body, due (ISO datetime), owner_email, company {domain, name} | None, contact emails,
    marker (a token unique to the run)."""
    connection, refused = _start(tenant_id, connection_id)
    if connection is None:
        return refused
    if connection.mode == ConnectionMode.SANDBOX:
        return _sandboxed(connection, "crm.objects.tasks.create", task, run_id)
    try:
        calls = _Calls(connection)
        existing = calls.task_with_marker(task["marker"])
        if existing is not None:  # an earlier attempt created it: confirm, do not create again
            return clients.Outcome("ok", body={"task": existing, "confirmed": True})
        properties = {
            "hs_task_subject": task["subject"],
            "hs_task_body": f"{task['body']}\n\nref {task['marker']}",  # the marker: a token search finds it
            "hs_timestamp": str(int(datetime.fromisoformat(task["due"]).timestamp() * 1000)),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": task.get("priority") or "MEDIUM",
        }
        if task.get("owner_email"):
            owner = calls.owner_id(task["owner_email"])
            if owner is None:
                return clients.Outcome("invalid", f"no HubSpot owner has the email {task['owner_email']}")
            properties["hubspot_owner_id"] = owner
        associations = []
        if task.get("company"):
            company = calls.company_id(task["company"]["domain"], task["company"].get("name") or "")
            associations.append(_association(company, TASK_TO_COMPANY))
        for email in task.get("contacts") or []:
            contact = calls.contact_id(email, create=False)
            if contact is not None:
                associations.append(_association(contact, TASK_TO_CONTACT))
        new = tasks.SimplePublicObjectInputForCreate(properties=properties, associations=associations)
        made = calls.call(calls.client.crm.objects.tasks.basic_api.create, new)
    except _Stop as stop:
        return _after(connection, stop.outcome)
    return clients.Outcome("ok", body={"task": str(made.id)})


def task_confirm(*, tenant_id: int, connection_id: int | None, marker: str) -> str | None:
    """The id of the task an earlier attempt created, if HubSpot has it (None: not created, or unknown)."""
    connection, _refused = _start(tenant_id, connection_id)
    if connection is None or connection.mode == ConnectionMode.SANDBOX:
        return None
    try:
        return _Calls(connection).task_with_marker(marker)
    except _Stop:
        return None


def _association(record_id: str, type_id: int) -> tasks.PublicAssociationsForObject:
    return tasks.PublicAssociationsForObject(
        to=tasks.PublicObjectId(id=record_id),
        types=[tasks.AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=type_id)],
    )
