"""The chaos load's plan (tests/chaos/load.py): content fixed by the seed, and the storm's early conversions."""

from __future__ import annotations

from itertools import islice

from tests.chaos.load import Batch, Plan


def _conversions(batches: list[Batch]) -> list[tuple[int, str]]:
    """(batch number, account id) of every call that makes an account a customer."""
    return [
        (batch.number, call["identification"]["accountId"])
        for batch in batches
        for call in batch.calls
        if call["type"] == "upsertAccount" and call["properties"].get("stage") == "Customer"
    ]


def _plan() -> Plan:
    return Plan(seed=8, accounts=10, batch_events=25, new_account_every=2, convert_fraction=0.3, convert_after=20)


def test_the_same_seed_gives_the_same_batches() -> None:
    first = [(b.number, b.message_ids) for b in islice(_plan().batches(), 60)]
    again = [(b.number, b.message_ids) for b in islice(_plan().batches(), 60)]
    assert first == again


def test_the_oldest_trials_convert_one_a_batch_each_once_and_the_events_stay_those_of_the_seed() -> None:
    plain = list(islice(_plan().batches(), 40))
    scheduled = {account for _number, account in _conversions(plain)}

    plan = _plan()
    batches = plan.batches()
    before = list(islice(batches, 20))  # 10 accounts live by now
    plan.convert_oldest(3)
    after = list(islice(batches, 20))

    early = [(number, account) for number, account in _conversions(after) if account not in scheduled]
    assert [number for number, _account in early] == [20, 21, 22]  # one a batch, from the next batch on
    live_order = [f"c8-a{n}" for n in range(10)]
    expected = [account for account in live_order if account not in scheduled][:3]
    assert [account for _number, account in early] == expected  # the oldest not converted already
    everything = _conversions(before + after)
    assert len(everything) == len({account for _number, account in everything})  # nobody converts twice
    # Only when accounts convert changes: the events (and their message ids) are those of the seed.
    assert [b.message_ids for b in before + after] == [b.message_ids for b in plain]
