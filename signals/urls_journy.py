from __future__ import annotations

from django.urls import path

from signals import api_journy as views

urlpatterns = [
    path("track", views.TrackView.as_view(), name="journy-track"),
    path("users/upsert", views.UpsertUserView.as_view(), name="journy-users-upsert"),
    path("users", views.DeleteUserView.as_view(), name="journy-users-delete"),
    path("accounts/upsert", views.UpsertAccountView.as_view(), name="journy-accounts-upsert"),
    path("accounts", views.DeleteAccountView.as_view(), name="journy-accounts-delete"),
    path("accounts/users/add", views.AddUsersView.as_view(), name="journy-accounts-users-add"),
    path("accounts/users/remove", views.RemoveUsersView.as_view(), name="journy-accounts-users-remove"),
    path("link", views.LinkView.as_view(), name="journy-link"),
    path("validate", views.ValidateView.as_view(), name="journy-validate"),
    path("batch", views.BatchView.as_view(), name="journy-batch"),
]
