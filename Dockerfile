# One image for web, worker and beat (see docker-compose.yml).
FROM python:3.12-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

RUN groupadd --system plg && useradd --system --gid plg --home-dir /app plg

COPY pyproject.toml README.md ./
COPY plgapp ./plgapp
COPY accounts ./accounts
COPY signals ./signals
COPY scoring ./scoring
COPY playbooks ./playbooks
COPY integrations ./integrations
RUN pip install .

COPY manage.py Procfile gunicorn.conf.py ./
COPY templates ./templates
COPY static ./static

# collectstatic needs settings to load; these build-time values never reach a running container.
RUN STATIC_ROOT=/app/staticfiles SECRET_KEY=build-only-not-a-secret-0123456789abcdef \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    python manage.py collectstatic --noinput --verbosity 0

ENV STATIC_ROOT=/app/staticfiles PORT=8000
USER plg
EXPOSE 8000
CMD ["sh", "-c", "gunicorn plgapp.wsgi --bind 0.0.0.0:${PORT} --workers ${WEB_CONCURRENCY:-3} --access-logfile -"]
