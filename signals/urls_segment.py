from __future__ import annotations

from django.urls import path

from signals import api_segment as views

urlpatterns = [
    path("v1/batch", views.BatchView.as_view(), name="segment-batch"),
    path("v1/identify", views.IdentifyView.as_view(), name="segment-identify"),
    path("v1/group", views.GroupView.as_view(), name="segment-group"),
    path("v1/track", views.TrackView.as_view(), name="segment-track"),
    path("v1/alias", views.AliasView.as_view(), name="segment-alias"),
    path("v1/page", views.PageView.as_view(), name="segment-page"),
    path("v1/screen", views.ScreenView.as_view(), name="segment-screen"),
]
