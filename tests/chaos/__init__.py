"""The fault-injection suite (issue 8): `python -m tests.chaos` (`make chaos`); `tests/test_chaos.py` is the short
version that `make test` runs. See docs/chaos.md."""
