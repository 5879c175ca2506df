"""Local fake servers that answer like the real Slack Web API and HubSpot CRM API.

Tests drive them through the official SDKs (``slack_sdk``, ``hubspot-api-client``); see each module's
docstring for the emulated endpoints and the recipe to point the SDK at a fake, and ``server.py`` for the
request record, fault injection and the Retry-After check. ``python -m tests.fakes slack|hubspot`` runs one
standalone.
"""

from __future__ import annotations

from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.server import FakeServer, Faults, RecordedRequest, Response, RetryAfterViolation
from tests.fakes.slack import FakeSlack

__all__ = ["FakeHubSpot", "FakeServer", "FakeSlack", "Faults", "RecordedRequest", "Response", "RetryAfterViolation"]
