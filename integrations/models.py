"""Connections to the providers playbook actions talk to (DESIGN §7, §11), and what sandboxes recorded."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from django.db import models
from django.utils import timezone

from plgapp.models import TenantManager, TenantScopedModel

SLACK_COLORS = {"good": "#2EB67D", "warning": "#ECB22E", "danger": "#E01E5A"}  # as Slack draws them


class Provider(models.TextChoices):
    SLACK = "slack", "Slack"
    HUBSPOT = "hubspot", "HubSpot"
    WEBHOOK = "webhook", "Webhook"


class ConnectionMode(models.TextChoices):
    LIVE = "live", "Live"
    SANDBOX = "sandbox", "Sandbox"  # records what would have been sent, sends nothing


class ConnectionStatus(models.TextChoices):
    UNTESTED = "untested", "Not tested yet"
    OK = "ok", "Working"
    BROKEN = "broken", "Broken"  # credentials refused: actions stop until someone fixes it


class Connection(TenantScopedModel):
    """One tenant's connection to a provider. Credentials are stored encrypted (`integrations.crypto`) and
    never leave the server; `settings` holds what is not secret (a default channel, a rate limit …)."""

    provider = models.CharField(max_length=20, choices=Provider.choices)
    name = models.CharField(max_length=100)
    mode = models.CharField(max_length=10, choices=ConnectionMode.choices, default=ConnectionMode.LIVE)
    credentials = models.TextField(blank=True, default="", help_text="Fernet token of the credentials JSON.")
    settings = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=ConnectionStatus.choices, default=ConnectionStatus.UNTESTED)
    last_error = models.TextField(blank=True, default="")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    account_name = models.CharField(max_length=200, blank=True, default="", help_text="Workspace / portal.")
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[Connection]]

    class Meta:
        indexes = [models.Index(fields=["tenant", "provider"], name="connection_tenant_provider")]

    def __str__(self) -> str:
        return f"{self.provider}: {self.name}"


class SandboxCall(TenantScopedModel):
    """A call a sandbox connection would have made: the sandbox outbox the UI shows."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=60, help_text='e.g. "chat.postMessage"')
    request = models.JSONField(default=dict)
    run_id = models.BigIntegerField(null=True, blank=True, help_text="The ActionRun, when an action made it.")
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[TenantManager[SandboxCall]]

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at"], name="sandboxcall_tenant_created")]

    def __str__(self) -> str:
        return f"{self.operation} ({self.created_at:%Y-%m-%d %H:%M})"

    def summary(self) -> dict[str, Any]:
        """What the outbox shows: where it would have gone, what it said, and its colour if any."""
        request = self.request if isinstance(self.request, dict) else {}
        if self.operation == "chat.postMessage":
            colors = [a.get("color") for a in request.get("attachments") or [] if isinstance(a, dict)]
            color = str(next(iter(colors), "") or "")
            color = SLACK_COLORS.get(color, color if re.fullmatch(r"#[0-9A-Fa-f]{6}", color) else "")
            return {"to": request.get("channel", ""), "text": request.get("text", ""), "color": color}
        if self.operation.startswith("lists.memberships."):
            verb = "add to" if self.operation.endswith(".add") else "remove from"
            return {"to": f"{verb} list {request.get('list_id', '')}", "text": request.get("email", ""), "color": ""}
        if self.operation == "crm.objects.tasks.create":
            owner = f" (owner {request['owner_email']})" if request.get("owner_email") else ""
            company = (request.get("company") or {}).get("domain", "")
            return {"to": f"task for {company or 'no company'}{owner}", "color": "",
                    "text": f"{request.get('subject', '')} — due {str(request.get('due', ''))[:10]}"}  # fmt: skip
        return {"to": self.operation, "text": "", "color": ""}

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "connection": self.connection_id, "operation": self.operation,
                "request": self.request, "run_id": self.run_id, "created_at": self.created_at}  # fmt: skip
