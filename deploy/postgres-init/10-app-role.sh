#!/bin/sh
# First boot of the postgres image: the application's own role. It owns nothing and cannot bypass row-level
# security (docs/adr/0013-row-level-security.md); `migrate` (as POSTGRES_USER, the owner) grants it the tables.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE plg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
SQL
