"""`make run` / `make demo`: migrate, (demo: seed), then web + worker + beat in the foreground.

    python -m plgapp.runner run  [--port 8000]
    python -m plgapp.runner demo [--port 8000] [--check]

--check does the whole set-up, waits until /readyz answers 200 and a worker has consumed from every
queue, then stops everything and exits 0 (non-zero on failure): the smoke test CI runs.
Expects DATABASE_URL / REDIS_URL / SECRET_KEY, normally from `python -m plgapp.devservices run`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
QUEUES = ("ingest", "scoring", "playbooks", "actions", "default")


def say(message: str) -> None:
    print(f"[{Path(sys.argv[0]).stem if sys.argv else 'runner'}] {message}", file=sys.stderr, flush=True)


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, str(PROJECT_ROOT / "manage.py"), *args], check=True, env=env, cwd=PROJECT_ROOT)  # noqa: S603


def local_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["PORT"] = str(port)
    # Plain http on loopback: cookies cannot be https-only, and humans read the logs.
    env.setdefault("SECURE_COOKIES", "false")
    env.setdefault("LOG_FORMAT", "console")
    env.setdefault("PLG_LOCAL_DIR", str(PROJECT_ROOT / ".local"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fetch_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback URL
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def check(base_url: str, env: dict[str, str], processes: subprocess.Popen[bytes], *, timeout: float = 120,
          demo_key: str | None = None) -> None:  # fmt: skip
    started = time.monotonic()
    deadline = started + timeout
    status, body = 0, dict[str, object]()

    def still_running() -> bool:
        if processes.poll() is not None:
            raise SystemExit(f"a process stopped during the check (exit status {processes.returncode}); see above")
        return time.monotonic() < deadline

    while still_running():
        try:
            status, body = fetch_json(f"{base_url}/readyz")
        except (OSError, ValueError):
            status = 0
        if status == 200:
            break
        time.sleep(0.5)
    if status != 200:
        raise SystemExit(f"/readyz did not answer 200 within {timeout:.0f}s (last: {status} {body})")
    say(f"/readyz answered 200: {body.get('checks')}")
    subprocess.run(  # noqa: S603
        [str(BIN_DIR / "celery"), "-A", "plgapp", "call", "plgapp.tasks.heartbeats_dispatch"],
        check=True, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    while still_running():
        try:
            _status, body = fetch_json(f"{base_url}/readyz")
        except (OSError, ValueError):
            time.sleep(0.5)
            continue
        ages = body.get("worker_heartbeat_age_seconds") or {}
        assert isinstance(ages, dict)
        elapsed = time.monotonic() - started + 1
        fresh = {queue for queue, age in ages.items() if isinstance(age, int) and age <= elapsed}
        if fresh >= set(QUEUES):
            say(f"a worker consumed from every queue: {', '.join(QUEUES)}")
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"no worker consumed from every queue within {timeout:.0f}s (heartbeat ages: {ages})")
    if demo_key:
        _check_outbox(base_url, demo_key, still_running, timeout)


def _check_outbox(base_url: str, key: str, still_running: Callable[[], bool], timeout: float) -> None:
    """The demo's playbook really ran: its sandbox connections recorded what they would have sent."""
    count = 0
    while still_running():
        request = urllib.request.Request(  # noqa: S310 - our own loopback URL
            f"{base_url}/api/v1/connections/sandbox-calls/?limit=500", headers={"Authorization": f"Bearer {key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own loopback URL
                count = len(json.loads(response.read()).get("results") or [])
        except (OSError, ValueError):
            count = 0
        if count:
            say(f"the Trial PQA playbook ran: the sandbox outbox holds {count} call{'s' if count != 1 else ''}")
            return
        time.sleep(1)
    raise SystemExit(f"the demo's playbook sent nothing to the sandbox outbox within {timeout:.0f}s")


def _demo_secret_key(env: dict[str, str]) -> str | None:
    path = Path(env["PLG_LOCAL_DIR"]) / "demo.json"
    return json.loads(path.read_text()).get("secret_key") if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plgapp.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["run", "demo"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument("--check", action="store_true", help="set up, check /readyz and the workers, stop")
    args = parser.parse_args(argv)

    def stop_on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # run the `finally` below, which stops honcho and its processes

    signal.signal(signal.SIGTERM, stop_on_term)
    signal.signal(signal.SIGHUP, stop_on_term)
    env = local_env(args.port)
    base_url = f"http://127.0.0.1:{args.port}"
    manage("migrate", "--noinput", env=env)
    manage("collectstatic", "--noinput", "--verbosity", "0", env=env)
    if args.mode == "demo":
        manage("demo_setup", "--url", base_url, env=env)
        manage("demo_data", *(["--accounts", "150", "--days", "45"] if args.check else []), env=env)

    honcho = [str(BIN_DIR / "honcho"), "start", "--procfile", str(PROJECT_ROOT / "Procfile"), "--port", str(args.port)]
    if not args.check:
        say(f"serving {base_url} with a worker and beat; Ctrl-C stops everything")
    process = subprocess.Popen(honcho, env=env, cwd=PROJECT_ROOT, start_new_session=args.check)  # noqa: S603
    try:
        if args.check:
            check(base_url, env, process, demo_key=_demo_secret_key(env) if args.mode == "demo" else None)
            say("demo check passed")
            return 0
        return process.wait()
    except KeyboardInterrupt:
        return process.wait()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL) if args.check else process.kill()
                process.wait()


if __name__ == "__main__":
    sys.exit(main())
