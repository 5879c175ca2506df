"""Run a fake standalone: ``python -m tests.fakes slack|hubspot [--port N] [fault options]``.

Prints the URL and the seeded credentials (JSON) on stdout, then serves until interrupted. Faults can be
changed while it runs through the control API (``POST /_fake/faults``, see ``tests/fakes/server.py``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.slack import FakeSlack

FAKES: dict[str, type[FakeSlack] | type[FakeHubSpot]] = {"slack": FakeSlack, "hubspot": FakeHubSpot}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument("provider", choices=sorted(FAKES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--rate-limit-fraction", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1, help="seconds announced with injected 429s")
    parser.add_argument("--server-error-fraction", type=float, default=0.0)
    parser.add_argument("--server-error-status", type=int, default=503)
    parser.add_argument("--hang-fraction", type=float, default=0.0)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--fault-path", default=None, help="fnmatch pattern limiting faults to some paths")
    parser.add_argument(
        "--rate-limit",
        nargs=2,
        metavar=("LIMIT", "WINDOW"),
        type=float,
        help="enforce at most LIMIT requests per WINDOW seconds per client key",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> FakeSlack | FakeHubSpot:
    fake = FAKES[args.provider](seed=args.seed, host=args.host, port=args.port)
    fake.set_faults(
        rate_limit_fraction=args.rate_limit_fraction,
        retry_after=args.retry_after,
        server_error_fraction=args.server_error_fraction,
        server_error_status=args.server_error_status,
        hang_fraction=args.hang_fraction,
        hang_seconds=args.hang_seconds,
        path=args.fault_path,
    )
    if args.rate_limit:
        limit, window = args.rate_limit
        fake.set_rate_limit(limit=int(limit), window=window, path=args.fault_path)
    return fake


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    fake = build(args)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with fake:
        seeded = fake.seed_demo()
        print(json.dumps({"provider": args.provider, "url": fake.url, **seeded}), flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
