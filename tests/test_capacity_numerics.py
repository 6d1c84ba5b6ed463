"""The capacity search's numbers: SLO parsing, level attainment with blocks as units, the
monotone crossing and its interval, the backlog test, goodput. Pure; no Ray, no MLX."""

from __future__ import annotations

import numpy as np
import pytest

from datamodel.errors import ConfigError
from profiling.verdict import capacity as cap
from profiling.verdict.targets import Target

OPS = ("analyze", "search", "embed", "switch", "ingest")


def test_parse_slo_reads_latency_ttft_and_error_rate() -> None:
    slo = cap.parse_slo("analyze:p95<=2", OPS)
    assert (slo.op, slo.metric, slo.threshold, slo.need) == ("analyze", "p95", 2.0, 0.95)
    assert slo.latency_field == "duration"
    assert cap.parse_slo("all:p99<=500ms", OPS).threshold == pytest.approx(0.5)
    ttft = cap.parse_slo("analyze:ttft_p95<=0.5", OPS)
    assert ttft.latency_field == "ttft" and ttft.need == 0.95
    errors = cap.parse_slo("errors:rate<=0.01", OPS)
    assert errors.need == pytest.approx(0.99) and errors.latency_field is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("analyse:p95<=2", "unknown op 'analyse'"),
        ("analyze:p100<=2", "unknown metric"),
        ("analyze:mean<=2", "unknown metric"),
        ("analyze:p95>=2", "expected OP:METRIC<=VALUE"),
        ("errors:rate<=1.5", "share in [0, 1)"),
        ("errors:p95<=1", "errors take the metric 'rate'"),
        ("analyze:p95<=0", "must be > 0"),
    ],
)
def test_bad_slos_name_the_problem(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        cap.parse_slo(text, OPS)
    assert says in str(err.value) and text in str(err.value)


def test_latency_targets_become_slos_and_the_rest_do_not() -> None:
    targets = [
        Target("a", "p95_s:analyze", "<", 2.0, "s"),
        Target("b", "switch_p99_s", "<", 3.0, "s"),
        Target("c", "service_uss_mb_max", "<", 500, "MB"),
    ]
    slos = cap.slos_from_targets(targets, "default")
    assert [s.text for s in slos] == ["analyze:p95<=2", "switch:p99<=3"]
    assert all(s.source == "targets: default" for s in slos)


def test_a_failed_op_never_keeps_a_latency_slo() -> None:
    slo = cap.parse_slo("analyze:p95<=2", OPS)
    assert slo.kept({"op": "analyze", "ok": True, "duration": 1.0})
    assert not slo.kept({"op": "analyze", "ok": False, "duration": 0.1})
    assert not slo.covers({"op": "search"})


def test_blocks_as_units_widen_the_interval_when_misses_cluster() -> None:
    # 200 ops in 20 blocks of 10; 10% missed. Spread: one miss per block. Clustered: two
    # whole blocks missed. Same share; the clustered one knows less.
    blocks = np.repeat(np.arange(20), 10)
    spread = np.ones(200)
    spread[::10] = 0
    clustered = np.ones(200)
    clustered[:20] = 0
    a = cap.attainment(spread, blocks, 0.8, "s")
    b = cap.attainment(clustered, blocks, 0.8, "s")
    assert a.estimate == b.estimate == pytest.approx(0.9)
    assert b.n_eff < a.n_eff
    assert (b.high - b.low) > (a.high - a.low)  # type: ignore[operator]
    assert a.verdict == "pass"


def test_verdicts_pass_fail_and_unresolved() -> None:
    blocks = np.repeat(np.arange(10), 20)
    assert cap.attainment(np.ones(200), blocks, 0.95, "s").verdict == "pass"
    low = np.ones(200)
    low[::2] = 0
    assert cap.attainment(low, blocks, 0.95, "s").verdict == "fail"
    near = np.ones(200)
    near[::20] = 0  # 95% kept, need 95%: cannot tell
    assert cap.attainment(near, blocks, 0.95, "s").verdict == "unresolved"
    assert cap.attainment(np.zeros(0), np.zeros(0), 0.95, "s").verdict == "no data"
    assert cap.level_verdict([cap.attainment(np.ones(200), blocks, 0.95, "s")]) == "pass"


def _level(value: float, share: float, rng: np.random.Generator, n: int = 300) -> cap.LevelData:
    kept = (rng.random(n) < share).astype(float)
    blocks = np.repeat(np.arange(n // 10), 10)
    return cap.LevelData(value, {"x:p95<=1": kept}, {"x:p95<=1": blocks})


def test_capacity_is_the_crossing_with_an_interval_that_holds_the_levels_around_it() -> None:
    slo = cap.Slo("x", "p95", 1.0)
    rng = np.random.default_rng(3)
    # Attainment falls with load: 1.0 up to 8, then 0.9 at 10, 0.5 at 12.
    levels = [_level(v, s, rng) for v, s in ((4, 1.0), (8, 0.995), (10, 0.9), (12, 0.5))]
    got = cap.estimate(levels, [slo])
    assert got.value is not None and 8 < got.value < 10
    assert got.low is not None and got.high is not None
    assert got.low <= 8 and got.high >= 10 and not got.censored
    assert got.limiting_slo == "x:p95<=1"
    assert "holds" in cap.describe(got, "ops/s")


def test_capacity_above_and_below_every_level_is_censored() -> None:
    slo = cap.Slo("x", "p95", 1.0)
    rng = np.random.default_rng(4)
    all_pass = cap.estimate([_level(v, 1.0, rng) for v in (2, 4)], [slo])
    assert all_pass.censored == "above" and all_pass.value == 4 and all_pass.high is None
    none_pass = cap.estimate([_level(v, 0.3, rng) for v in (2, 4)], [slo])
    assert none_pass.censored == "below" and none_pass.value == 0.0
    assert "every level" in cap.describe(none_pass, "ops/s")


def test_an_over_capacity_level_fails_every_slo() -> None:
    slo = cap.Slo("x", "p95", 1.0)
    rng = np.random.default_rng(5)
    level = _level(20, 1.0, rng)
    level.over = True
    assert cap.level_verdict(cap.judge_level(level, [slo])) == "fail"
    got = cap.estimate([_level(10, 1.0, rng), level], [slo])
    assert got.value is not None and 10 <= got.value < 20


def test_backlog_growth_needs_a_confident_slope_above_a_share_of_arrivals() -> None:
    t = np.arange(10.0)
    assert cap.backlog_growth(t, 0.5 * t, rate=10.0).growing  # gains 5% of arrivals
    flat = np.array([2, 3, 1, 2, 3, 2, 1, 2, 3, 2], dtype=float)
    assert not cap.backlog_growth(t, flat, rate=10.0).growing
    assert not cap.backlog_growth(t[:3], t[:3], rate=1.0).growing  # too few points


def test_goodput_counts_ok_ops_within_every_latency_slo() -> None:
    slos = [cap.Slo("analyze", "p95", 1.0), cap.Slo("errors", "rate", 0.01)]
    records = [
        {"op": "analyze", "ok": True, "duration": 0.5},
        {"op": "analyze", "ok": True, "duration": 1.5},
        {"op": "analyze", "ok": False, "duration": 0.1},
        {"op": "search", "ok": True, "duration": 9.0},
    ]
    assert cap.goodput(records, slos, 2.0) == pytest.approx(1.0)


def test_knee_is_where_throughput_stops_following_load() -> None:
    assert cap.knee([1, 2, 4, 8], [1.0, 2.0, 3.9, 4.1]) == 4
    assert cap.knee([1, 2], [1.0, 2.0]) is None


def test_a_search_bounded_by_throughput_answers_the_throughput_within_its_bracket() -> None:
    slo = cap.Slo("x", "p95", 1.0)
    rng = np.random.default_rng(6)
    levels = [_level(v, 1.0, rng) for v in (4.0, 8.0)]
    got = cap.estimate(levels, [slo], ceiling=10.2, saturated=9.8)
    assert got.limiting_slo == cap.THROUGHPUT and got.value == pytest.approx(9.8)
    assert got.low is not None and got.low <= 8.0 and got.high == pytest.approx(10.2)
    assert "limited by throughput" in cap.describe(got, "ops/s")
    # A measured level that failed only because its backlog grew is the throughput too,
    # not the SLO whose interpolation happens to cross first.
    over = _level(11.0, 1.0, rng)
    over.over = True
    got = cap.estimate([*levels, over], [slo])
    assert got.limiting_slo == cap.THROUGHPUT and 8.0 <= got.value < 11.0
    # A level that misses its SLO below the ceiling is the limit, not the throughput.
    worse = [*levels, _level(9.0, 0.5, rng)]
    got = cap.estimate(worse, [slo], ceiling=10.2, saturated=9.8)
    assert got.limiting_slo == "x:p95<=1" and got.value is not None and 8 < got.value < 9


def test_finish_rate_has_a_t_interval_over_one_second_blocks() -> None:
    ends = [100.0 + k / 10.0 for k in range(100)]  # ten a second for ten seconds
    got = cap.finish_rate(ends, 100.0, 10.0)
    assert got.value == pytest.approx(10.0) and got.low <= 10.0 <= got.high
    assert cap.finish_rate([], 0.0, 1.0).high == float("inf")


def _found(value: float, low: float, high: float | None, axis: str = "rate") -> dict:
    return {
        "axis": axis,
        "slos": [{"text": "analyze:p95<=2"}],
        "capacity": {"value": value, "low": low, "high": high, "unit": "ops/s", "sentence": "s"},
    }


def test_capacity_ratio_has_an_interval_wider_than_either_side() -> None:
    got = cap.compare_capacities(_found(5.0, 4.5, 5.5), _found(10.0, 9.0, 11.0))
    assert got["ratio"] == pytest.approx(2.0) and got["significant"]
    # Wider, in logs, than either side's own interval; narrower than their extremes.
    assert got["high"] / got["low"] > 5.5 / 4.5
    assert 9.0 / 5.5 < got["low"] < 2.0 < got["high"] < 11.0 / 4.5
    same = cap.compare_capacities(_found(5.0, 4.5, 5.5), _found(5.2, 4.7, 5.7))
    assert not same["significant"] and "no difference shown" in same["sentence"]
    censored = cap.compare_capacities(_found(5.0, 4.5, 5.5), _found(8.0, 7.0, None))
    assert censored["ratio"] is None and "censored" in censored["sentence"]
    with pytest.raises(ConfigError, match="different axes"):
        cap.compare_capacities(_found(5.0, 4.5, 5.5), _found(5.0, 4.5, 5.5, axis="users"))


def test_demand_plan_divides_by_the_capacity_and_its_low_end() -> None:
    assert cap.parse_demand("20 projects x 0.3 ops/s") == (20, 0.3)
    with pytest.raises(ConfigError, match="N projects x R ops/s"):
        cap.parse_demand("lots")
    found = cap.Capacity(2.5, 2.0, 3.0, "x")
    got = cap.plan(found, (20, 0.3), replicas=2)
    assert got["machines"] == 3 and got["machines_at_low"] == 3 and got["replicas"] == 6
    got = cap.plan(cap.Capacity(2.5, 1.9, 3.0, "x"), (20, 0.3), replicas=2)
    assert got["machines_at_low"] == 4 and "4 at the interval's low end" in got["sentence"]
    assert "no plan" in cap.plan(cap.Capacity(0.0, 0.0, 1.0, "x", "below"), (1, 1.0), 1)["sentence"]


def test_what_fixing_a_cause_might_buy_is_an_estimate_from_its_share_where_it_held() -> None:
    from workloads.runs.capacity import MOST_GAIN, if_fixed

    causes = [
        {"kind": "hot_code", "title": "t", "share": 0.5, "tier": "latency", "gain_s": 2.0},
        {"kind": "tiny", "title": "t", "share": 0.01, "tier": "latency", "gain_s": 0.1},
        {"kind": "no_gain", "title": "t", "share": 0.4, "tier": "latency", "gain_s": None},
        {"kind": "waiting", "title": "t", "share": 0.99, "tier": "latency", "gain_s": 9.0},
    ]
    fixes = {f["kind"]: f for f in if_fixed(causes, 4.0)}
    assert set(fixes) == {"hot_code", "waiting"}  # no gain estimate, or too small: none
    assert fixes["hot_code"]["capacity"] == pytest.approx(8.0)  # half the time: twice
    assert fixes["waiting"]["capacity"] == pytest.approx(4.0 / (1 - MOST_GAIN))
    assert "more than about 40" in fixes["waiting"]["sentence"]
    assert "99% of latency" in fixes["waiting"]["sentence"]
