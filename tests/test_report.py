"""The HTML report: its data, its HTML (sections, escaping, no network), and a real browser.

The browser test drives headless Chromium over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-separated JSON on file descriptors 3 and 4), so it needs
no websocket client and no extra Python package. It fails, never skips, when Chromium is
missing: ``make setup`` (``scripts/setup-chromium.sh``) installs it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from datamodel.runfolder import RunData
from profiling.render.charts import format_value, nice_ticks, thin
from profiling.render.html import REPORT_HTML, build_report, render_html, write_report

EVIL = "<script>alert(1)</script>"
T0 = 1767225600.0
FIXTURE = Path(__file__).parent / "data" / "run_fixture"
SECTIONS = (
    "run",
    "targets",
    "budget",
    "findings",
    "context",
    "latency",
    "projects",
    "processes",
    "system",
    "adapters",
    "mlx",
)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _records() -> list[dict[str, Any]]:
    """Two ops over 30 s: analyze takes 0.2 s (0.4 s after 15 s), search 20 ms; some fail."""
    rows = []
    for i in range(120):
        t = T0 + 1.0 + i * 0.25
        op = "analyze" if i % 2 == 0 else "search"
        slow = 2.0 if t - T0 > 15 else 1.0
        duration = 0.2 * slow if op == "analyze" else 0.02
        rows.append(
            {
                "op": op,
                "project": EVIL if i % 3 == 0 else "alpha",
                "stage": "warm" if i < 60 else "hot",
                "worker": i % 2,
                "replica": 0,
                "planned": t,
                "duration": duration,
                "wait": duration / 4,
                "service": duration * 0.75,
                "stages": {"adapter": 0.01, "embed": 0.01, "search": 0.001, "model": duration / 2},
                "node": "n" * 56,
                "pid": 100,
                "ok": i % 17 != 5,
                "error": None if i % 17 != 5 else f"boom {EVIL}",
                "switched": i % 3 == 0,
            }
        )
    return rows


def _timeline() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in range(32):
        t = T0 + s
        rows.append(
            {
                "t": t,
                "node": "n" * 56,
                "role": "system",
                "cpu_percent": 40 + s % 50,
                "cpu_per_core": [30.0 + s, 50.0],
                "mem_used": 4e9 + s * 1e7,
                "mem_total": 16e9,
            }
        )
        for pid, role, rss, uss in (
            (100, "replica-0", 300e6 + s * 2e6, 250e6 + s * 2e6),
            (200, "generator-0", 120e6, 90e6),
            (300, "raylet", 40e6, None),
        ):
            rows.append(
                {
                    "t": t,
                    "node": "n" * 56,
                    "pid": pid,
                    "role": role,
                    "cpu_percent": 80.0 if role == "replica-0" else 5.0,
                    "rss": rss,
                    "uss": uss,
                    "pss": None,
                    "threads": 10,
                }
            )
    return rows


def _snapshots() -> list[dict[str, Any]]:
    return [
        {
            "replica": 0,
            "label": label,
            "t": T0 + t,
            "uss": 250e6 + t * 1e6,
            "pss": None,
            "rss": 300e6 + t * 1e6,
            "mlx_active": 130e6,
            "mlx_peak": 140e6 + t * 1e6,
            "mlx_cache": 10e6 + t * 1e5,
            "adapter_bytes": 4e6,
            "index_bytes": 1e6,
            "adapter_hits": hits,
            "adapter_misses": 3,
            "adapter_evictions": hits // 20,
            "tracemalloc_top": [],
            "tracemalloc_diff": [],
        }
        for label, t, hits in (("start", 0.5, 0), ("stage:warm:end", 16.0, 17), ("end", 31.0, 38))
    ]


def _analysis() -> dict[str, Any]:
    target = {"metric": "m", "op": "<", "unit": "s", "description": "d"}
    return {
        "run_id": "synthetic-run",
        "budget": {
            "records": 120,
            "seconds": 40.0,
            "tail_records": 7,
            "tail_seconds": 3.0,
            "tail_definition": "slowest 5% of each op",
            "parts": [
                {
                    "component": "queue",
                    "seconds": 10.0,
                    "share": 0.25,
                    "tail_seconds": 1.5,
                    "tail_share": 0.5,
                    "by_op": {"analyze": 0.15, "search": 0.01},
                },
                {
                    "component": "model",
                    "seconds": 30.0,
                    "share": 0.75,
                    "tail_seconds": 1.5,
                    "tail_share": 0.5,
                    "by_op": {"analyze": 0.4, "search": 0.0},
                },
                {
                    "component": "lag",
                    "seconds": 0.0,
                    "share": 0.0,
                    "tail_seconds": 0.0,
                    "tail_share": 0.0,
                    "by_op": {},
                },
            ],
            "ops": {
                "analyze": {"mean_s": 0.55, "p95_s": 0.8, "p99_s": 0.9},
                "search": {"mean_s": 0.01, "p95_s": 0.02, "p99_s": 0.03},
            },
        },
        "findings": [
            {
                "kind": "overload",
                "title": "overload: 25% of latency is queue wait",
                "tier": "latency",
                "explains": ["queue"],
                "seconds": 10.0,
                "share": 0.25,
                "tail_seconds": 1.5,
                "tail_share": 0.5,
                "by_op": {"analyze": 9.0, "search": 1.0},
                "evidence": {"op": "analyze", "wait_s": 1.5, "records": 56},
                "weak": False,
                "files": ["records.jsonl"],
                "suggestion": "add replicas",
                "gain_s": None,
            },
            {
                "kind": "hot_code",
                "title": f"hot code: {EVIL} holds 1 s",
                "tier": "latency",
                "explains": ["other"],
                "seconds": 1.0,
                "share": 0.025,
                "tail_seconds": 0.0,
                "tail_share": 0.0,
                "evidence": {"frame": EVIL},
                "weak": True,
                "files": ["profiles/replica-0.collapsed"],
                "suggestion": "speed it up",
                "gain_s": 1.0,
            },
        ],
        "facts": [
            {
                "kind": "cpu",
                "title": "node n: CPU 95% on average",
                "evidence": {"mean_cpu_percent": 95.0},
                "files": ["timeline.jsonl"],
            }
        ],
        "targets": [
            {
                "target": {**target, "name": "analyze p95", "threshold": 0.3},
                "value": 0.4,
                "passed": False,
                "evidence": "p95 0.4 s over 53 records",
            },
            {
                "target": {**target, "name": "search p95", "threshold": 0.3},
                "value": 0.02,
                "passed": True,
                "evidence": "p95 20 ms",
            },
            {
                "target": {**target, "name": "switch p99", "threshold": 3.0},
                "value": None,
                "passed": None,
                "evidence": "no switch records",
            },
        ],
        "notes": ["slow_blas: skipped, no mlx_probe.json in the run folder"],
    }


def _comparison() -> dict[str, Any]:
    return {
        "a_label": "baseline",
        "b_label": "optimized",
        "rows": [
            {
                "kind": "latency",
                "name": "analyze",
                "metric": "p95_s",
                "a": 0.4,
                "b": 0.25,
                "ratio": 0.625,
                "p_value": 0.0004,
                "ci_low": 0.55,
                "ci_high": 0.7,
                "significant": True,
                "verdict": "faster",
            },
            {
                "kind": "latency",
                "name": "search",
                "metric": "p95_s",
                "a": 0.02,
                "b": 0.03,
                "ratio": 1.5,
                "p_value": 0.01,
                "ci_low": 1.2,
                "ci_high": 1.8,
                "significant": True,
                "verdict": "slower",
            },
            {
                "kind": "memory",
                "name": "replica-0",
                "metric": "uss_bytes",
                "a": 3e8,
                "b": 2.9e8,
                "ratio": 0.97,
                "p_value": 0.4,
                "ci_low": 0.9,
                "ci_high": 1.05,
                "significant": False,
                "verdict": "no change",
            },
        ],
        "warnings": ["runs come from different machines"],
        "targets": [
            {
                "name": "analyze p95",
                "threshold": 0.3,
                "a": 0.4,
                "b": 0.25,
                "passed_a": False,
                "passed_b": True,
            }
        ],
        "diff_flamegraph": "../diff/replica-0.diff.svg",
    }


def make_run(folder: Path, *, full: bool = True) -> Path:
    """A synthetic run folder: run.json and records, plus (``full``) every optional file."""
    folder.mkdir(parents=True)
    run = {
        "schema_version": 1,
        "run_id": "synthetic-run",
        "status": "completed",
        "started_utc": "2026-01-01T00:00:00+00:00",
        "ended_utc": "2026-01-01T00:00:32+00:00",
        "spec": {
            "profile": {"name": "smoke", "description": "two ops"},
            "config": {"name": "default", "description": "fast", "blas": "openblas"},
        },
        "machine": {
            "hostname": "box",
            "os": "Linux",
            "machine": "x86_64",
            "chip": "Test CPU",
            "cpus_logical": 2,
            "cpus_physical": 2,
            "memory_bytes": 16e9,
            "python": "3.11",
            "versions": {"mlx": "0.30", "ray": "2.60"},
        },
        "replicas": [{"replica": 0, "pid": 100}],
        "replica_stats": [
            {
                "replica": 0,
                "switches": 40,
                "adapters": {"hits": 38, "misses": 3, "evictions": 1, "bytes_resident": 4e6},
                "indexes": {"hits": 50, "misses": 2, "evictions": 0},
            }
        ],
    }
    (folder / "run.json").write_text(json.dumps(run))
    _jsonl(folder / "records.jsonl", _records())
    if not full:
        return folder
    _jsonl(folder / "timeline.jsonl", _timeline())
    (folder / "snapshots.json").write_text(json.dumps(_snapshots()))
    probe = {
        "replica": 0,
        "device": "Device(cpu, 0)",
        "backend": "cpu",
        "blas_kind": "openblas",
        "matmul_gflops": 80.0,
        "memory_limit_bytes": 2e10,
        "threads": 8,
    }
    (folder / "mlx_probe.json").write_text(json.dumps([probe]))
    (folder / "analysis.json").write_text(json.dumps(_analysis()))
    profiles = folder / "profiles"
    profiles.mkdir()
    (profiles / "replica-0.collapsed").write_text(f"main;serve;{EVIL} 30\nmain;serve;idle 10\n")
    (profiles / "replica-0.svg").write_text('<svg width="10" height="10"></svg>')
    (profiles / "replica-0.speedscope.json").write_text("{}")
    return folder


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "synthetic-run")


# ---------------------------------------------------------------- data


def test_report_data_has_every_section_with_its_numbers(run_dir: Path) -> None:
    run = RunData.load(run_dir)
    data = build_report(run, _analysis(), _comparison())
    assert [s.key for s in data.sections] == [*SECTIONS, "comparison", "flamegraphs"]
    assert all(s.missing is None for s in data.sections)

    targets = data.section("targets").tables[0]
    assert [row[3].text for row in targets.rows] == ["FAIL", "PASS", "N/A"]
    assert [row[3].cls for row in targets.rows] == ["fail", "pass", "na"]
    assert [targets.rows[0][1].text, targets.rows[0][2].text] == ["< 300 ms", "400 ms"]
    findings = data.section("findings").tables[0]
    assert findings.rows[0][1].bar == pytest.approx(0.5)  # the larger of overall and tail
    assert findings.rows[0][1].text == "25%" and "tail 50%" in findings.rows[0][1].note
    assert "few records" in findings.rows[1][2].text and "gain 1.0 s" in findings.rows[1][4].note
    budget = data.section("budget").tables[0]
    assert [row[0].text for row in budget.rows] == ["queue", "model", "total (mean)", "p95", "p99"]
    assert [c.text for c in budget.rows[1][1:3]] == ["400", "0"]
    assert data.section("context").tables[0].rows[0][1].text.startswith("node n")

    latency = data.section("latency")
    assert [c.title.split(":")[0] for c in latency.charts[:2]] == ["analyze", "search"]
    p50, p95 = latency.charts[0].series
    assert p50.name == "analyze p50" and p95.dashed
    # Windows of 5 s by issue time: analyze doubles from 0.2 s to 0.4 s after 15 s.
    assert p50.points[0] == (2.5, pytest.approx(0.2))
    assert p50.points[-1][1] == pytest.approx(0.4)
    op_table, errors = latency.tables
    assert [row[0].text for row in op_table.rows] == ["analyze", "search"]
    assert sum(int(row[2].text) for row in op_table.rows) == 7  # 120 records, every 17th fails
    assert [(row[0].text, row[1].text) for row in errors.rows] == [
        ("search", "4"),
        ("analyze", "3"),
    ]
    assert errors.rows[0][-1].text == f"boom {EVIL}"
    assert dict(data.section("run").facts)["projects"] == f"{EVIL}, alpha"

    processes = data.section("processes")
    names = {s.name for c in processes.charts for s in c.series}
    assert {"replica-0 RSS", "replica-0 USS", "generator-0 RSS", "raylet RSS"} <= names
    assert "raylet USS" not in names  # raylet has no USS samples
    adapters = data.section("adapters").charts[0]
    switched = adapters.series[0]
    assert switched.kind == "step" and switched.points[-1][1] == 40
    assert {s.name for s in adapters.series} >= {"replica-0 hits", "replica-0 evictions"}
    mlx = data.section("mlx").charts[0]
    assert [s.name for s in mlx.series] == ["replica-0 active", "replica-0 peak", "replica-0 cache"]

    comparison = data.section("comparison")
    verdicts = [row[-1] for row in comparison.tables[0].rows]
    assert [(c.text, c.cls) for c in verdicts] == [
        ("faster", "good"),
        ("slower", "bad"),
        ("no change", "na"),
    ]
    assert comparison.notes == ["runs come from different machines"]
    assert comparison.tables[-1].rows[0][1].href == "../diff/replica-0.diff.svg"
    flames = data.section("flamegraphs").tables[0].rows[0]
    assert [c.href for c in flames[1:4]] == [
        "profiles/replica-0.svg",
        "profiles/replica-0.speedscope.json",
        "profiles/replica-0.collapsed",
    ]
    assert flames[-1].text == f"{EVIL} (75%)"


def test_missing_files_make_short_sections(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "bare", full=False)
    data = build_report(RunData.load(folder), None)
    missing = {s.key for s in data.sections if s.missing}
    expected = {
        "targets",
        "budget",
        "findings",
        "context",
        "processes",
        "system",
        "mlx",
        "flamegraphs",
    }
    assert missing == expected
    assert data.section("adapters").missing is None  # switched records and replica stats
    html = render_html(data)
    assert html.count("Not captured in this run") == len(expected)
    assert 'id="comparison"' not in html


def test_chart_helpers() -> None:
    assert nice_ticks(0, 9.3, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 0)[::5] == [0, 1]
    assert format_value(0.0123, "s") == "12.3 ms"
    assert format_value(2.5, "s") == "2.5 s"
    assert format_value(337_526_784, "bytes") == "338 MB"
    assert format_value(95.0, "percent") == "95%"
    assert format_value(1234, "count") == "1,234"
    points = [(float(i), float(i % 7)) for i in range(1000)]
    thinned = thin(points, 100)
    assert len(thinned) == 100 and max(y for _, y in thinned) == 6


def test_comparison_json_layout_is_read_from_the_run_folder(run_dir: Path) -> None:
    """``python -m workloads.compare`` writes comparison.json and diff SVGs into run B."""
    row = {
        "kind": "op",
        "name": "all",
        "metric": "throughput_ops_s",
        "a": 10.0,
        "b": 12.5,
        "ratio": 1.25,
        "p_value": 0.01,
        "ci_low": 1.1,
        "ci_high": 1.4,
        "significant": True,
        "verdict": "improvement",
        "n_a": 3,
        "n_b": 3,
        "reason": "Welch t-test over runs",
    }
    rows = [
        row,
        {
            **row,
            "metric": "memory_peak_mb",
            "a": 300.0,
            "b": 420.0,
            "ratio": 1.4,
            "verdict": "regression",
        },
        {
            **row,
            "metric": "error_rate",
            "a": 0.0,
            "b": 0.0,
            "ratio": None,
            "p_value": None,
            "ci_low": None,
            "ci_high": None,
            "significant": False,
            "verdict": "not testable",
        },
    ]
    comparison = {
        "schema_version": 1,
        "a": {"label": "run-a", "runs": [{"run_id": "run-a"}]},
        "b": {"label": EVIL, "runs": [{"run_id": "synthetic-run"}]},
        "factor": 1.1,
        "alpha": 0.05,
        "summary": {"regression": 1, "improvement": 1},
        "rows": rows,
        "targets": [
            {
                "name": "analyze p95",
                "op": "<",
                "threshold": 0.3,
                "unit": "s",
                "a": 0.4,
                "b": 0.25,
                "passed_a": False,
                "passed_b": True,
            }
        ],
        "diff_flamegraphs": {"replica-0": "diff-replica-0.svg"},
        "warnings": [],
        "notes": [],
    }
    (run_dir / "comparison.json").write_text(json.dumps(comparison))
    html = write_report(run_dir).read_text()
    section = html[html.index('<section id="comparison">') :]
    assert "A/B comparison: run-a vs &lt;script&gt;" in section
    for text in (
        'class="num">12.5/s<',
        ">420.0 MB<",
        '"good">improvement<',
        '"bad">regression<',
        '"na">not testable<',
        'href="diff-replica-0.svg"',
        ">&lt; 300 ms<",
        "95% CI",
    ):
        assert text in section, text


# ---------------------------------------------------------------- HTML

_LINK = re.compile(r"""\b(?:src|href|action|data|poster)\s*=\s*["']?([^"'\s>]*)""", re.I)


def test_html_is_self_contained_and_escaped(run_dir: Path) -> None:
    path = write_report(run_dir, _comparison())
    assert path == run_dir / REPORT_HTML
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == []  # no temp file
    html = path.read_text()
    for key in (*SECTIONS, "comparison", "flamegraphs"):
        assert f'<section id="{key}">' in html
    assert "http://" not in html and "https://" not in html
    for link in _LINK.findall(html):
        assert "://" not in link and not link.startswith("//"), link
        assert not link.startswith("/"), f"absolute link {link}"
    assert "<script" not in html.lower()
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5  # project, error, frames
    assert EVIL not in html
    assert html.count("<svg") == html.count("</svg>") >= 9
    assert 'href="profiles/replica-0.svg"' in html
    assert ">FAIL<" in html and ">PASS<" in html and ">N/A<" in html


def test_report_of_the_committed_fixture(tmp_path: Path) -> None:
    folder = shutil.copytree(FIXTURE, tmp_path / "fixture-run")
    html = write_report(folder).read_text()
    assert '<section id="latency">' in html and "<svg" in html
    assert "http://" not in html


# ---------------------------------------------------------------- browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)


MAC_BROWSERS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
)


def chromium_binary() -> str:
    """Chromium's path (``LOADLENS_CHROMIUM`` overrides); fails the test when it is missing."""
    names = (os.environ.get("LOADLENS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome")
    for name in names:
        found = shutil.which(name) if name else None
        if found:
            return found
    for path in MAC_BROWSERS:
        if os.access(path, os.X_OK):
            return path
    pytest.fail(
        "headless Chromium is needed for the report's browser test and was not found: run "
        "`make setup` (or `sudo bash scripts/setup-chromium.sh`), or set LOADLENS_CHROMIUM"
    )


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    def __init__(self, binary: str, profile_dir: Path, log: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: move the child's ends
        # out of the way (close-on-exec), then dup2 them onto 3 and 4 in the child only.
        fds = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        os.close(to_child_r)
        os.close(from_child_w)

        def onto_3_and_4() -> None:
            os.dup2(fds[0], 3)
            os.dup2(fds[1], 4)

        args = [
            binary,
            *CHROMIUM_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile_dir}",
        ]
        self.log = log
        # `make test` preloads OpenBLAS for MLX; inherited by Chromium, it kills the GPU
        # process ("GPU process isn't usable. Goodbye."), so the browser gets a clean env.
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [*args, "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                close_fds=False,
                preexec_fn=onto_3_and_4,
                env=env,
            )
        for fd in fds:
            os.close(fd)
        self.events: list[dict[str, Any]] = []
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_child, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))
        os.close(self._from_child)
        self._inbox.put(None)

    def _next(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            message = self._inbox.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            message = None
        if message is None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"Chromium gave no {waiting_for}; its log ends:\n{tail}")
        return message

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Call ``method`` and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next(deadline, f"reply to {method}")
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return dict(reply.get("result") or {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first ``event`` received (perhaps already), by method name."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for e in self.events[seen:]:
                if e.get("method") == event:
                    return e
            seen = len(self.events)
            self.events.append(self._next(deadline, event))

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)


def browser_problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and non-local requests among DevTools events."""
    problems = []
    for e in events:
        method, params = e.get("method"), e.get("params") or {}
        if method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            url = str(params.get("request", {}).get("url", ""))
            if not url.startswith(("file://", "data:", "about:")):
                problems.append(f"network request: {url}")
    return problems


SVG_BOXES = """JSON.stringify(Array.from(document.querySelectorAll('svg.chart'), s => {
  const r = s.getBoundingClientRect();
  return [r.width, r.height, s.querySelectorAll('path, circle').length];
}))"""


def render_in_browser(
    report: Path, screenshot: Path, work: Path, width: int = 1280
) -> dict[str, Any]:
    """Open ``report`` in headless Chromium, screenshot the whole page, return what it saw.

    ``work`` holds the browser's throw-away profile and its log.
    """
    browser = Browser(chromium_binary(), work / "chromium-profile", work / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        browser.send("Emulation.setDeviceMetricsOverride", metrics, session)
        browser.send("Page.navigate", {"url": report.as_uri()}, session)
        browser.wait_for("Page.loadEventFired")
        value = browser.send(
            "Runtime.evaluate", {"expression": SVG_BOXES, "returnByValue": True}, session
        )["result"]["value"]
        layout = browser.send("Page.getLayoutMetrics", session=session)
        height = min(math.ceil(layout["cssContentSize"]["height"]), 16000)
        browser.send("Emulation.setDeviceMetricsOverride", {**metrics, "height": height}, session)
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session, timeout=60)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        time.sleep(0.2)  # let late console messages arrive before judging
        browser.send("Runtime.evaluate", {"expression": "1"}, session)
        return {
            "boxes": json.loads(value),
            "height": height,
            "problems": browser_problems(browser.events),
        }
    finally:
        browser.close()


def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    data = build_report(RunData.load(run_dir), _analysis(), _comparison())
    charts = sum(len(s.charts) for s in data.sections)
    report = run_dir / REPORT_HTML
    report.write_text(render_html(data))
    screenshot = run_dir / "report.png"

    seen = render_in_browser(report, screenshot, tmp_path)

    assert seen["problems"] == []
    assert len(seen["boxes"]) == charts >= 9
    for width, height, marks in seen["boxes"]:
        assert width > 300 and height > 150 and marks > 0
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
