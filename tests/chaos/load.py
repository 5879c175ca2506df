"""A seeded, steady ingestion load through the journy.io-compatible API, sent as an SDK would.

`Plan` decides everything from the seed: trial accounts appear one after another, each with an Owner and a few
Admins and Members; their users send product events (every one with a `messageId`), the busier accounts more;
some accounts later become customers (the playbook's goal). `Sender` threads post the plan's batches to
`/api/journy/batch` at a steady rate and retry a batch that was not answered 2xx — on 503/5xx or a connection
error, after its `Retry-After` (else a short backoff) — until it is accepted or the run ends. Every attempt is
recorded (when, status, Retry-After) so the harness can say what the API answered during each fault.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

EVENT_NAMES = ("login", "report_created", "dashboard_viewed", "integration_connected", "invite_sent")
BATCH_PATH = "/api/journy/batch"


def account_name(number: int) -> str:
    return f"Chaos Co {number:03d}"


@dataclass
class Batch:
    number: int
    calls: list[dict[str, Any]]
    message_ids: list[str]


@dataclass
class Plan:
    """Deterministic content: the same seed gives the same accounts, users, events and message ids."""

    seed: int
    accounts: int
    batch_events: int
    new_account_every: int  # batches
    convert_fraction: float = 0.3
    convert_after: int = 40  # batches after an account appeared
    bursts: int = 0  # accounts to introduce at once (one a batch) on top of the steady ones: see `burst`
    conversions: int = 0  # of the oldest trial accounts, how many to convert now (one a batch): see `convert_oldest`

    def burst(self, accounts: int) -> None:
        """A cohort of sign-ups now: new accounts that, while few others are live, rank high and enroll together,
        so actions are in flight while a fault happens. (Which accounts and events come stays fixed by the seed; only
        when they come.)"""
        self.bursts += accounts

    def convert_oldest(self, accounts: int) -> None:
        """The oldest trial accounts not yet converted become customers now. Most of the first accounts enroll early
        in a run, so their goal-reached actions come now. A late cohort's enrollments depend on how the newcomers
        rank among every account by then: in one run none of them enrolled during the Slack storm."""
        self.conversions += accounts

    def batches(self) -> Iterator[Batch]:
        rng = random.Random(self.seed)
        live: list[tuple[int, list[tuple[str, str]], float]] = []  # (account, [(user id, role)], activity)
        converts: dict[int, int] = {}  # batch number -> account
        converted: set[int] = set()  # accounts made customers (or due to be, in `converts`)
        sequence = 0
        number = 0
        while True:
            calls: list[dict[str, Any]] = []
            now = datetime.now(UTC).isoformat()
            steady = len(live) < self.accounts and number % self.new_account_every == 0
            if steady or self.bursts > 0:
                if not steady:
                    self.bursts -= 1
                n = len(live)
                roles = ["Owner", *rng.choices(["Admin", "Member", "Member"], k=rng.randint(1, 3))]
                users = [(f"c{self.seed}-a{n}-u{j}", role) for j, role in enumerate(roles)]
                activity = rng.uniform(0.2, 3.0)
                live.append((n, users, activity))
                account = {"accountId": f"c{self.seed}-a{n}"}
                calls.append({"type": "upsertAccount", "identification": account, "triggeredAt": now,
                              "properties": {"name": account_name(n), "stage": "Trial",
                                             "owner_email": f"rep{n % 3}@vendor.test"}})  # fmt: skip
                calls.append({"type": "addUsers", "account": {"accountId": account["accountId"]}, "triggeredAt": now,
                              "users": [{"identification": {"userId": uid, "email": f"{uid}@chaos.test"},
                                         "properties": {"role": role}} for uid, role in users]})  # fmt: skip
                if rng.random() < self.convert_fraction:
                    converts[number + self.convert_after] = n
                    converted.add(n)
            early = None
            if self.conversions > 0:
                self.conversions -= 1
                early = next((n for n, _users, _activity in live if n not in converted), None)
                if early is not None:
                    converted.add(early)
            for customer in (converts.pop(number, None), early):
                if customer is None:
                    continue
                calls.append({"type": "upsertAccount", "identification": {"accountId": f"c{self.seed}-a{customer}"},
                              "triggeredAt": now, "properties": {"stage": "Customer"}})  # fmt: skip
            ids: list[str] = []
            weights = [activity for _n, _users, activity in live]
            for _ in range(self.batch_events if live else 0):
                n, users, _activity = rng.choices(live, weights=weights)[0]
                uid, _role = rng.choice(users)
                message_id = f"chaos-{self.seed}-{sequence}"
                sequence += 1
                ids.append(message_id)
                identification = {"user": {"userId": uid}, "account": {"accountId": f"c{self.seed}-a{n}"}}
                calls.append({"type": "track", "name": rng.choice(EVENT_NAMES), "messageId": message_id,
                              "identification": identification, "triggeredAt": now})  # fmt: skip
            yield Batch(number, calls, ids)
            number += 1


@dataclass
class Attempt:
    batch: int
    started: float  # time.time()
    finished: float
    status: int  # 0: no answer (connection refused, reset, timeout)
    retry_after: str | None
    error: str = ""


@dataclass
class Sender:
    """Posts the plan at `rate` events per second from `threads` threads, retrying like an SDK."""

    port: int
    key: str
    plan: Plan
    rate: float
    threads: int = 3
    timeout: float = 30.0
    attempts: list[Attempt] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    rejected_calls: int = 0
    abandoned: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _give_up: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _batches: Iterator[Batch] | None = None
    _next_at: float = 0.0

    def start(self) -> None:
        self._batches = self.plan.batches()
        self._next_at = time.monotonic()
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"sender-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self, *, finish_within: float) -> None:
        """No new batches; batches in flight keep retrying for up to `finish_within` seconds."""
        self._stop.set()
        deadline = time.monotonic() + finish_within
        for thread in self._workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._give_up.set()
        for thread in self._workers:
            thread.join(timeout=35)

    def _take(self) -> Batch | None:
        with self._lock:
            if self._stop.is_set() or self._batches is None:
                return None
            batch = next(self._batches)
            interval = max(len(batch.message_ids), 1) / self.rate
            # Pace; after an outage catch up at most 2 s worth instead of bursting the whole backlog.
            self._next_at = max(self._next_at + interval, time.monotonic() - 2.0)
            wait = self._next_at - time.monotonic()
            self.sent.update(batch.message_ids)
        if wait > 0:
            time.sleep(wait)
        return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            self._send(batch)

    def _send(self, batch: Batch) -> None:
        body = orjson.dumps({"calls": batch.calls})
        delay = 0.5
        while not self._give_up.is_set():
            started = time.time()
            status, retry_after, error, answer = 0, None, "", b""
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                connection.request("POST", BATCH_PATH, body=body,
                                   headers={"Content-Type": "application/json", "x-api-key": self.key})  # fmt: skip
                response = connection.getresponse()
                answer = response.read()
                status, retry_after = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
            finally:
                connection.close()
            with self._lock:
                self.attempts.append(Attempt(batch.number, started, time.time(), status, retry_after, error))
            if 200 <= status < 300:
                rejected = orjson.loads(answer).get("data", {}).get("rejected") or []
                with self._lock:
                    self.rejected_calls += len(rejected)
                    bad = {batch.calls[item["index"]].get("messageId") for item in rejected}
                    self.accepted.update(mid for mid in batch.message_ids if mid not in bad)
                return
            if status and status < 500 and status != 429:
                with self._lock:  # a 4xx other than 429 would be our bug: never retried, reported
                    self.rejected_calls += len(batch.calls)
                return
            wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else delay
            delay = min(delay * 2, 5.0)
            self._give_up.wait(wait)
        with self._lock:
            self.abandoned.update(batch.message_ids)
