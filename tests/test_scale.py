"""A run of 100k operations read, summarised, analysed and reported from its columns.

The committed fixture run's records are copied 2,500 times (ids and times made unique, as
``python -m workloads.bench results`` builds its folders): every figure that is a ratio or
an extreme of the records must come out as the fixture's own, and every count 2,500 times
it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datamodel.runfolder import RECORDS_PARQUET, RunData
from profiling.render.html import write_report
from profiling.render.terminal import write_analysis
from profiling.verdict.analyze import analyze
from profiling.verdict.goodput import summary_with_goodput
from profiling.verdict.targets import load_targets
from workloads.bench.results import _folder, _replicated

FIXTURE = Path(__file__).parent / "data" / "run_fixture"
COPIES = 2_500


def _judged(folder: Path) -> tuple[dict, dict]:
    data = RunData.load(folder)
    targets = load_targets("default")
    summary = summary_with_goodput(data.records, data.run, targets, "default")
    analysis = analyze(data, targets, "default")
    write_analysis(analysis, folder)
    write_report(folder)
    return summary, json.loads((folder / "analysis.json").read_text())


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict, Path]]:
    root = tmp_path_factory.mktemp("scale")
    one = shutil.copytree(FIXTURE, root / "one")
    table, copies = _replicated(one, 40 * COPIES)
    assert copies == COPIES and table.num_rows == 100_000
    many = _folder(one, root / "many", table, "parquet", copies)
    assert (many / RECORDS_PARQUET).exists() and not (many / "records.jsonl").exists()
    return {"one": (*_judged(one), one), "many": (*_judged(many), many)}


def test_100k_records_summarise_as_their_one_copy(judged) -> None:
    one, many = judged["one"][0], judged["many"][0]
    assert many["records"] == 100_000 == one["records"] * COPIES
    assert many["errors"] == one["errors"] * COPIES
    for op, figures in one["by_op"].items():
        mine = many["by_op"][op]
        assert mine["count"] == figures["count"] * COPIES
        assert mine["failed"] == figures["failed"] * COPIES
        for key in ("min", "max", "mean"):
            assert mine[key] == pytest.approx(figures[key], rel=1e-9)
    assert many["goodput"]["share"] == pytest.approx(one["goodput"]["share"])


def test_100k_records_analyse_and_report_as_their_one_copy(judged) -> None:
    (_, one, _), (_, many, folder) = judged["one"], judged["many"]
    report = (folder / "report.html").read_text()
    assert "100,000 issued" in report
    assert many["budget"]["records"] == 100_000
    shares = {p["component"]: p["share"] for p in one["budget"]["parts"]}
    for part in many["budget"]["parts"]:
        assert part["share"] == pytest.approx(shares[part["component"]], abs=1e-9)
    # Findings read off the timeline (a leak's slope) see a run 2,500 times as long; the
    # records' own finding ranked first is the same.
    assert many["findings"][0]["kind"] == one["findings"][0]["kind"]
