from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from plgapp.keys import KeyKind


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(
        label="Email", widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"})
    )


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="Where the key is used, e.g. “Web app (production)”.",
        widget=forms.TextInput(attrs={"placeholder": "Web app (production)"}),
    )
    kind = forms.ChoiceField(
        choices=[
            (KeyKind.WRITE.value, "Write key — sends data (safe to ship in apps)"),
            (KeyKind.SECRET.value, "Secret key — management API (keep on servers)"),
        ],
        initial=KeyKind.WRITE.value,
    )
