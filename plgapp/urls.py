from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.db import transaction
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as account_views
from integrations import ui as integration_ui
from integrations import views as integration_views
from playbooks import builder_views as playbook_pages
from plgapp import health, views
from plgapp.forms import EmailAuthenticationForm
from plgapp.login_limits import ThrottledLoginView
from scoring import scoring_views as scoring_pages
from scoring import views as scoring_views

handler403 = "plgapp.views.forbidden"
handler404 = "plgapp.views.not_found"
handler500 = "plgapp.views.server_error"

tenant_ui: list[URLPattern | URLResolver] = [
    path("", views.tenant_overview, name="tenant_overview"),
    path("settings/api-keys/", views.api_keys, name="api_keys"),
    path("settings/members/", views.members_page, name="members"),
    path("settings/members/<int:member_id>/", views.member_change_view, name="member-change"),
    path("settings/integrations/", integration_ui.integrations_page, name="integrations"),
    path(
        "settings/integrations/<int:connection_id>/test/", integration_ui.connection_test_view, name="connection-test"
    ),
    path(
        "settings/integrations/<int:connection_id>/delete/",
        integration_ui.connection_delete_view,
        name="connection-delete",
    ),
    path("outbox/", integration_ui.outbox_page, name="outbox"),
    path("pqls/", scoring_views.pql_list_page, name="pqls"),
    path("scoring/", scoring_pages.scoring_page, name="scoring"),
    path("scoring/settings/", scoring_pages.scoring_settings_view, name="scoring-settings"),
    path("scoring/retrain/", scoring_pages.retrain_view, name="scoring-retrain"),
    path("scoring/discovery/", scoring_pages.discovery_view, name="scoring-discovery"),
    path("scoring/signals/", scoring_pages.signal_create_view, name="scoring-signal-create"),
    path("scoring/signals/<int:signal_id>/delete/", scoring_pages.signal_delete_view, name="scoring-signal-delete"),
    path("playbooks/", playbook_pages.playbooks_page, name="playbooks"),
    path("playbooks/new/", playbook_pages.builder_new, name="playbook-new"),
    path("playbooks/builder/", playbook_pages.builder_update, name="playbook-builder-update"),
    path("playbooks/builder/text-preview/", playbook_pages.builder_text_preview, name="playbook-text-preview"),
    path("playbooks/<int:playbook_id>/", playbook_pages.playbook_results_page, name="playbook-results"),
    path("playbooks/<int:playbook_id>/edit/", playbook_pages.builder_edit, name="playbook-edit"),
    path(
        "playbooks/<int:playbook_id>/transition/", playbook_pages.playbook_transition_view, name="playbook-transition"
    ),
    path(
        "playbooks/<int:playbook_id>/runs/<int:run_id>/retry/", playbook_pages.run_retry_view, name="playbook-run-retry"
    ),
    path("accounts/<int:account_id>/", account_views.account_page, name="account-page"),
    path("users/<int:user_id>/", account_views.user_page, name="user-page"),
    path("pqls/<int:account_id>/disposition/", scoring_views.pql_disposition_view, name="pql-disposition"),
    path("settings/integrations/<str:provider>/connect/", integration_views.oauth_connect, name="oauth-connect"),
    path("settings/api-keys/<uuid:key_id>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
    path("api/v1/", include(("plgapp.api_urls", "plgapp"), namespace="tenant-api")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path(
        "login/",
        ThrottledLoginView.as_view(authentication_form=EmailAuthenticationForm, redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(success_url="/login/?password=set"),
        name="password_reset_confirm",
    ),
    path("", views.home, name="home"),
    path("t/<slug:tenant_slug>/", include(tenant_ui)),
    path("api/v1/", include(("plgapp.api_urls", "plgapp"), namespace="api")),
    path("integrations/<str:provider>/callback/", integration_views.oauth_callback, name="oauth-callback"),
    path("api/journy/", include("signals.urls_journy")),
    path("api/segment/", include("signals.urls_segment")),
    # The schema and its docs read no table: no transaction, so they answer during a database outage too.
    path(
        "api/schema/",
        transaction.non_atomic_requests(SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[])),
        name="schema",
    ),
    path(
        "api/docs/",
        transaction.non_atomic_requests(
            SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[])
        ),
        name="api-docs",
    ),
]
