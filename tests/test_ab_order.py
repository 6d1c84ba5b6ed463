"""The order of the sides in the rounds of an A/B run."""

from __future__ import annotations

from workloads.runs.ab import round_order


def test_rounds_take_their_order_at_random_and_repeatably() -> None:
    pairs = round_order("multi-project-ab-1", 40)
    assert all(sorted(p) == ["baseline", "candidate"] for p in pairs)
    firsts = [p[0] for p in pairs]
    assert 8 <= firsts.count("candidate") <= 32  # both orders, not a fixed one
    assert round_order("multi-project-ab-1", 40) == pairs
