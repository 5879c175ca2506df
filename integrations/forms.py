"""The form that adds a connection in the UI: the same rules as the API (`connection_create` decides)."""

from __future__ import annotations

from typing import Any

from django import forms

from integrations.models import ConnectionMode, Provider
from integrations.services import CREDENTIAL_KEYS

CREDENTIAL_LABELS = {
    "bot_token": "Slack bot token (xoxb-…)",
    "access_token": "HubSpot private-app access token",
    "url": "Webhook URL",
    "secret": "Signing secret (16+ characters)",
}


class ConnectionForm(forms.Form):
    provider = forms.ChoiceField(choices=Provider.choices)
    name = forms.CharField(max_length=100, help_text="How playbook actions refer to it, e.g. “Sales Slack”.")
    mode = forms.ChoiceField(
        choices=ConnectionMode.choices, initial=ConnectionMode.LIVE,
        help_text="Sandbox records what would have been sent and sends nothing: try playbooks safely.",
    )  # fmt: skip
    bot_token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), label="Bot token")
    access_token = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), label="Access token")
    url = forms.URLField(required=False, label="Webhook URL", assume_scheme="https")
    secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False), label="Signing secret")

    def credentials(self) -> dict[str, Any]:
        """The credential fields this provider takes, as filled in (none for a sandbox)."""
        data = self.cleaned_data
        if data.get("mode") == ConnectionMode.SANDBOX:
            return {}
        return {key: data.get(key) or "" for key in CREDENTIAL_KEYS.get(data.get("provider", ""), ())}

    def add_service_errors(self, fields: dict[str, str]) -> None:
        """`connection_create`'s errors ("credentials.bot_token": …) on the fields they name."""
        for path, message in fields.items():
            name = path.removeprefix("credentials.")
            self.add_error(name if name in self.fields else None, message)
