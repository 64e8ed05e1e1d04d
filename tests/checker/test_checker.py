"""The checker's staleness judgement, on a history written by hand (the
multi-replica runs against real replicas are in tests/catalog/test_replicas.py)."""

from __future__ import annotations

import pytest
from catalog_checker import Checker, History, Moves


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


def test_checker_flags_list_membership_stale_beyond_budget() -> None:
    """Product 1 moved from category 9 to 10, answered at t=105."""
    checker = Checker(["http://x"], [1], [9, 10], seed=1, metrics=None)
    checker.stats["membership"].budget = 1.0
    moves = checker.moves[1] = Moves()
    moves.add(9, 100.0)
    moves.add(10, 105.0)
    checker.judge_list(9, {1}, 105.5)    # within budget: still in the old list
    checker.judge_list(10, set(), 105.5)  # ... or not yet in the new one
    checker.judge_list(10, {1}, 110.0)    # where it belongs
    checker.judge_list(9, set(), 110.0)
    assert checker.stats["membership"].stale == 0
    checker.judge_list(9, {1}, 107.0)     # 2 s after the move, still in the old list
    checker.judge_list(10, set(), 107.0)  # ... and missing from the new one
    assert checker.stats["membership"].stale == 2
    assert checker.stats["membership"].reads == 6


def test_a_move_in_flight_allows_both_lists() -> None:
    checker = Checker(["http://x"], [1], [9, 10], seed=1, metrics=None)
    moves = checker.moves[1] = Moves()
    moves.add(9, 100.0)
    moves.add(10, None)  # sent, not answered yet
    assert moves.possible(200.0) == {9, 10}
    checker.judge_list(9, set(), 200.0)
    checker.judge_list(10, {1}, 200.0)
    assert checker.stats["membership"].stale == 0
