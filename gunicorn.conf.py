"""gunicorn's settings for every way the web process starts: the Procfile, the Dockerfile, docker-compose, the
chaos stack and the benchmarks all run gunicorn from the project root, where it reads this file. Command-line
flags (--workers, --bind, --timeout) still win over it. docs/adr/0021-threaded-web-workers.md says why.
"""

# Threaded workers keep connections alive (HTTP/1.1 SDK clients reuse them) and overlap one request's database
# waits with another's Python: +4-7% ingestion throughput over sync workers on 2 cores (docs/benchmarks.md).
# Sync workers close the connection after each answer and then wait, in gunicorn 23+, for the client to close
# its end (RFC 9112 graceful close) before they take the next request.
worker_class = "gthread"
threads = 2


def post_worker_init(worker: object) -> None:
    """Once the worker has imported the application: its objects (Django, the URLconf, the models) live as long as
    the process, so the cyclic collector need not walk them again at every full collection (gc.freeze)."""
    import gc

    gc.freeze()
