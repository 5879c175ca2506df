"""Personal message templates (issue 6): Jinja2's **sandboxed** environment, strict about names.

    "{{ account.name }} is at {{ account.score.conversion | percent }} — {{ user.email }} ({{ membership.role }})"

Variables: `account` (name, domain, external_id, stage, properties, score.<kind>, reasons.<kind>, activation,
url), `user` (email, external_id, stage, properties, score.<kind>), `membership` (the user's relationship
properties in that account, e.g. role), `playbook` (name). A template is checked when a playbook is saved by
rendering it against a sample built from the tenant's data catalogue with `StrictUndefined`: a name the
tenant has never sent is an error then, not a blank at send time. At send time the same strictness holds;
the rendered text is stored on the ActionRun, so retries send the same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE = 4000
MAX_RENDERED = 40_000
SCORE_KINDS = {"account": ("conversion", "churn"), "user": ("health",)}


def _percent(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value) * 100:.{digits}f}%"


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{float(value):,.{digits}f}"


def _date(value: Any, layout: str = "%Y-%m-%d") -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.strftime(layout) if isinstance(value, date) else str(value)


def _reasons(value: Any, limit: int = 3) -> str:
    """A score's reasons as one line: "widgets 4.1x peers; invited 6 teammates"."""
    if not isinstance(value, list):
        return ""
    return "; ".join(str(reason.get("text", "")) for reason in value[:limit] if isinstance(reason, Mapping))


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters.update({"percent": _percent, "number": _number, "date": _date, "reasons": _reasons})


class TemplateInvalid(Exception):
    pass


def _undefined_text(message: str) -> str:
    """Jinja's "'dict object' has no attribute 'plann'" as "unknown name 'plann'" for a marketer."""
    name = message.rsplit("'", 2)[-2] if message.count("'") >= 2 else message
    return f"unknown name {name!r}: use a field the tenant sends (see the field picker)"


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render `template` with `context` (raises TemplateInvalid with a message a marketer can read)."""
    if len(template) > MAX_TEMPLATE:
        raise TemplateInvalid(f"at most {MAX_TEMPLATE} characters")
    try:
        text = _ENV.from_string(template).render(**context)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(f"line {exc.lineno}: {exc.message}") from None
    except UndefinedError as exc:
        raise TemplateInvalid(_undefined_text(exc.message or "")) from None
    except SecurityError as exc:
        raise TemplateInvalid(f"not allowed in a template: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateInvalid(f"cannot render: {exc}") from None
    if len(text) > MAX_RENDERED:
        raise TemplateInvalid(f"renders to more than {MAX_RENDERED} characters")
    return text


def sample_context(properties: Mapping[str, Mapping[str, str]], *, obj: str = "account") -> dict[str, Any]:
    """A context with every name a template may use for this tenant (from the catalogue's property keys),
    holding plausible values: rendering against it finds unknown names and type errors at save time."""
    samples = {"number": 1.0, "boolean": True, "datetime": "2026-01-01T00:00:00+00:00", "list": []}

    def props(entity: str) -> dict[str, Any]:
        return {key: samples.get(kind, "text") for key, kind in properties.get(entity, {}).items()}

    account = {
        "id": "1", "external_id": "acme", "name": "Acme", "domain": "acme.test", "stage": "Trial",
        "properties": props("account"), "score": dict.fromkeys(SCORE_KINDS["account"], 0.5),
        "reasons": {kind: [{"text": "a reason"}] for kind in SCORE_KINDS["account"]}, "activation": 0.5,
        "url": "https://plg.example/accounts/1",
    }  # fmt: skip
    user = {"id": "1", "external_id": "u1", "email": "ada@acme.test", "stage": "", "properties": props("user"),
            "score": dict.fromkeys(SCORE_KINDS["user"], 0.5), "url": "https://plg.example/users/1"}  # fmt: skip
    membership = props("membership")
    context: dict[str, Any] = {"playbook": {"name": "A playbook"}, "user": user, "membership": membership}
    if obj == "account":
        context["account"] = account
    return context


def template_errors(template: Any, properties: Mapping[str, Mapping[str, str]], *, obj: str = "account") -> str | None:
    """Why `template` cannot be saved for this tenant, or None."""
    if not isinstance(template, str):
        return "a text template"
    try:
        render(template, sample_context(properties, obj=obj))
    except TemplateInvalid as exc:
        return str(exc)
    return None


# What a template reads that a rescore writes: scores, their reasons, activation (in the scores' details).
SCORED_NAMES = frozenset({"score", "reasons", "activation"})


def template_reads_scores(template: Any) -> bool:
    """Whether `template` can show something a rescore writes (`account.score…`, `account.reasons…`,
    `account.activation`, `user.score…`). Conservative: an `account` or `user` used whole (printed, looped over,
    assigned) or indexed by a computed key counts as reading them; a template that does not parse reads nothing."""
    if not isinstance(template, str):
        return False
    try:
        tree = _ENV.parse(template)
    except TemplateSyntaxError:
        return False
    entities = [node for node in tree.find_all(nodes.Name) if node.name in ("account", "user")]
    narrowed = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, nodes.Name) and target.name in ("account", "user")):
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(getattr(node, "arg", None), "value", None)
        if not isinstance(key, str) or key in SCORED_NAMES:
            return True
        narrowed += 1
    return narrowed < len(entities)
