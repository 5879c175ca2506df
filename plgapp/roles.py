"""Who may do what: the one place that maps roles and API key kinds to capabilities."""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MARKETER = "marketer", "Marketer"
    SALES = "sales", "Sales"
    VIEWER = "viewer", "Viewer"


class Capability(StrEnum):
    VIEW = "view"  # read the tenant's data
    WORK_LEADS = "work_leads"  # sales work on PQA/PQL lists
    EDIT_PLAYBOOKS = "edit_playbooks"  # build, publish, pause playbooks
    MANAGE_TENANT = "manage_tenant"  # API keys, members, connections, scoring configuration
    INGEST = "ingest"  # post product data (write keys)


ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(
        {Capability.VIEW, Capability.WORK_LEADS, Capability.EDIT_PLAYBOOKS, Capability.MANAGE_TENANT}
    ),
    Role.MARKETER: frozenset({Capability.VIEW, Capability.EDIT_PLAYBOOKS}),
    Role.SALES: frozenset({Capability.VIEW, Capability.WORK_LEADS}),
    Role.VIEWER: frozenset({Capability.VIEW}),
}

# A secret key is the management API's admin; a write key can only send data (it ships inside client apps).
SECRET_KEY_CAPABILITIES = ROLE_CAPABILITIES[Role.ADMIN]
WRITE_KEY_CAPABILITIES = frozenset({Capability.INGEST})


def capabilities_for_role(role: str) -> frozenset[Capability]:
    return ROLE_CAPABILITIES.get(Role(role), frozenset())
