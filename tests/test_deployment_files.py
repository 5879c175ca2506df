"""docker-compose.yml, Procfile and the OpenAPI schema stay consistent with the code."""

from __future__ import annotations

from pathlib import Path

import yaml
from django.test import Client

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_one_image_as_web_worker_and_beat_on_postgres_16_and_redis_7() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]

    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    images = {services[name]["image"] for name in ("web", "worker", "beat", "migrate")}
    assert len(images) == 1, f"web, worker, beat and migrate must share one image: {images}"
    assert "gunicorn" in " ".join(services["web"]["command"])
    assert "worker" in services["worker"]["command"]
    assert "beat" in services["beat"]["command"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "SECRET_KEY" in compose["x-app"]["environment"]
    assert "?" in compose["x-app"]["environment"]["SECRET_KEY"], "SECRET_KEY must be required"


def test_the_procfile_runs_worker_on_every_queue() -> None:
    from plgapp.celery import QUEUES

    procfile = dict(line.split(": ", 1) for line in (PROJECT_ROOT / "Procfile").read_text().splitlines() if line)

    assert set(procfile) == {"web", "worker", "beat"}
    assert f"--queues {','.join(QUEUES)}" in procfile["worker"]


def test_the_openapi_schema_and_docs_are_served(db: None) -> None:
    client = Client()

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/api-keys/" in paths
    assert "/api/v1/api-keys/{id}/revoke/" in paths
    for route in ("/api/journy/track", "/api/journy/batch", "/api/journy/accounts/users/add", "/api/segment/v1/batch",
                  "/api/segment/v1/group", "/api/v1/accounts/{id}/", "/api/v1/users/{id}/", "/api/v1/events/",
                  "/api/v1/properties/"):  # fmt: skip
        assert route in paths, route
    assert {"secretKey", "writeKey", "segmentWriteKey"} <= set(schema.json()["components"]["securitySchemes"])
    assert docs.status_code == 200
