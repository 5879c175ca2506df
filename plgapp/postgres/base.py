"""Django's PostgreSQL backend, with a connection health check that costs no round trip on a healthy connection.

`CONN_HEALTH_CHECKS` (settings) makes Django check a reused connection before the first query of each request,
so that a connection the server dropped (a restart, a failover, a terminated backend) is replaced instead of
failing that request. Django checks with `SELECT 1`: a round trip on every request, 2.4% of a gunicorn worker's
time under ingestion load (docs/benchmarks.md). An idle connection has nothing to read, though: when its socket
is readable, the server has sent something — the error it sends as it closes the connection, or the close
itself — and only then is `SELECT 1` asked to decide. A connection cut without a word (a network partition)
passes both checks alike: the first query then fails, as it would after `SELECT 1` had hung.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        try:
            readable, _writable, _failed = select.select([self.connection.fileno()], [], [], 0)
        except (OSError, ValueError):  # the descriptor is gone
            return False
        return not readable or super().is_usable()
