"""Management API routes, mounted at /api/v1/ (secret key) and /t/<slug>/api/v1/ (signed-in session)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from plgapp.api import ApiKeyViewSet, TenantView

router = SimpleRouter(trailing_slash=True)
router.register("api-keys", ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("tenant/", TenantView.as_view(), name="tenant"),
    *router.urls,
]
