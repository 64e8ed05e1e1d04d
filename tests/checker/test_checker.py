"""The checker's staleness judgement, on a history written by hand (the
multi-replica runs against real replicas are in tests/catalog/test_replicas.py)."""

from __future__ import annotations

import pytest
from catalog_checker import Checker, History


def test_checker_flags_reads_stale_beyond_budget() -> None:
    checker = Checker(["http://x"], [1], [1], seed=1, metrics=None)
    checker.stats["price"].budget = 1.0
    hist = checker.history["price", 1] = History()
    hist.add("1.00", 100.0)
    hist.add("2.00", 105.0)       # answered at t=105
    checker.judge("price", 1, "1.00", 105.5)   # 0.5 s after: within budget
    checker.judge("price", 1, "2.00", 110.0)   # current value
    assert checker.stats["price"].stale == 0
    checker.judge("price", 1, "1.00", 107.0)   # 2 s after the newer write: stale
    assert checker.stats["price"].stale == 1
    assert checker.stats["price"].worst_lag == pytest.approx(2.0)
    checker.judge("price", 1, "9.99", 108.0)   # nobody wrote that
    assert checker.errors
