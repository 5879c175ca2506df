"""OpenAPI descriptions of our authentication schemes (loaded by PlgappConfig.ready)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class SecretKeyScheme(OpenApiAuthenticationExtension):
    target_class = "plgapp.authentication.SecretKeyAuthentication"
    name = "secretKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "plg_sk_…",
            "description": "A secret key of the tenant: `Authorization: Bearer plg_sk_…`.",
        }


class WriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "plgapp.authentication.WriteKeyAuthentication"
    name = ["writeKey", "writeKeyBasic"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "Write key (journy.io SDKs)."},
            {"type": "http", "scheme": "basic", "description": "Write key as user name, empty password (Segment)."},
        ]
