"""OpenAPI descriptions of our authentication schemes (loaded by PlgappConfig.ready) and the AutoSchema of every
endpoint (REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"])."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry
from drf_spectacular.utils import OpenApiResponse

from plgapp.api_base import TenantScopedAPIView


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

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{"writeKey": []}, {"writeKeyBasic": []}]  # either one (a list of names in one object means both)

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "Write key (journy.io SDKs)."},
            {"type": "http", "scheme": "basic", "description": "Write key as user name, empty password (Segment)."},
        ]


# The answers every management endpoint can give besides its own (DESIGN §7: {"error": {"code", "message",
# "fields"?}}). Which of them an operation documents follows from its shape: 404 where the path names something or
# the list is paged by cursor, 400 where it takes input, 415 where it takes a body.
ERROR_ANSWERS = {
    "400": "Invalid input: `error.fields` names each bad field",
    "401": "No credentials, or a wrong or revoked key",
    "403": "The key or the member's role may not do this (signed-in calls name their tenant: /t/<slug>/api/v1/…)",
    "404": "Nothing with that id in this tenant (another tenant's id answers the same), or an unknown page cursor",
    "415": "The body is not JSON (Content-Type: application/json)",
    "503": "The database is unavailable; nothing was changed. Retry after `Retry-After` seconds",
}


def error_answer(description: str) -> OpenApiResponse:
    """An answer in the management API's error shape, for `extend_schema(responses={...})`."""
    from plgapp.serializers import ErrorOutputSerializer

    return OpenApiResponse(ErrorOutputSerializer, description=description)


class PlgAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers of the management API, so the schema tells clients
    (and schemathesis) every status an operation can answer, each in the API's error shape."""

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: ComponentRegistry
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not isinstance(self.view, TenantScopedAPIView):
            return operation
        from plgapp.serializers import ErrorOutputSerializer

        component = self.resolve_serializer(ErrorOutputSerializer, "response")
        parameters = operation.get("parameters", [])
        codes = {"401", "403", "503"}
        if any(p["in"] == "path" for p in parameters) or any(p["name"] == "cursor" for p in parameters):
            codes.add("404")
        if method != "GET" or any(p["in"] == "query" for p in parameters):
            codes.add("400")
        if "requestBody" in operation:
            codes.add("415")
        responses = operation.setdefault("responses", {})
        for code in sorted(codes - set(responses)):
            responses[code] = {
                "description": ERROR_ANSWERS[code],
                "content": {"application/json": {"schema": component.ref}},
            }
        return operation
