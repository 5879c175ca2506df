"""What the API answers to OPTIONS (REST_FRAMEWORK["DEFAULT_METADATA_CLASS"]; its own module: DRF imports it while
defining APIView)."""

from __future__ import annotations

from typing import Any

from rest_framework.metadata import SimpleMetadata
from rest_framework.request import Request


class ApiMetadata(SimpleMetadata):
    """Name, description and media types, without DRF's per-method field listing: DRF builds that from the view's
    serializer_class, which views that pick their serializers per method do not set (an OPTIONS answered 500).
    /api/schema/ describes every request and answer."""

    def determine_actions(self, request: Request, view: Any) -> dict[str, Any]:
        return {}
