"""Management API routes, mounted at /api/v1/ (secret key) and /t/<slug>/api/v1/ (signed-in session)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api import AccountViewSet, PropertyDefinitionViewSet, UserViewSet
from integrations.api import ConnectionViewSet, SandboxCallViewSet
from playbooks.api import ActionRunViewSet, PlaybookViewSet, TemplatePreviewView
from plgapp.api import ApiKeyViewSet, TenantView
from scoring.api import DiscoveryView, ModelVersionViewSet, ScoreViewSet, ScoringSettingsView
from scoring.pql_api import PqlDispositionView, PqlListView
from signals.api import EventViewSet, SignalViewSet

router = SimpleRouter()
router.trailing_slash = "/?"  # DESIGN writes actions without the slash (…/train, …/preview): accept both
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("accounts", AccountViewSet, basename="account")
router.register("users", UserViewSet, basename="user")
router.register("events", EventViewSet, basename="event")
router.register("properties", PropertyDefinitionViewSet, basename="property")
router.register("scores", ScoreViewSet, basename="score")
router.register("signals", SignalViewSet, basename="signal")
router.register("playbooks/runs", ActionRunViewSet, basename="action-run")
router.register("playbooks", PlaybookViewSet, basename="playbook")
router.register("connections/sandbox-calls", SandboxCallViewSet, basename="sandbox-call")
router.register("connections", ConnectionViewSet, basename="connection")
router.register("scoring/models", ModelVersionViewSet, basename="model-version")

urlpatterns = [
    path("tenant/", TenantView.as_view(), name="tenant"),
    path("scoring/config/", ScoringSettingsView.as_view(), name="scoring-config"),
    path("scoring/discovery/", DiscoveryView.as_view(), name="scoring-discovery"),
    path("pqls/", PqlListView.as_view(), name="pqls"),
    path("pqls/<int:account_id>/disposition", PqlDispositionView.as_view(), name="pql-disposition"),
    path("playbooks/template-preview", TemplatePreviewView.as_view(), name="template-preview"),
    *router.urls,
]
