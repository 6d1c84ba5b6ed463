"""HTTP stacks end to end: a real ``mlx_lm.server`` that loadlens starts, and a running
OpenAI-style server that fails in every way a server can (tests/oddserver.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from runs import (
    ROOT,
    finish,
    only_run,
    read_jsonl,
    records_written,
    run_cli,
    run_records,
    start,
    wait_for,
)

PROFILE = str(ROOT / "tests" / "data" / "http-adapters.toml")


def test_mlx_lm_server_with_three_adapters(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = run_cli(
        *("--profile", PROFILE, "--stack", "mlx-lm", "--results-dir", str(results)),
        "--no-fail-on-targets",
        cache=cache_dir,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    target = info["stack"]
    assert target["kind"] == "mlx-lm" and target["url"].startswith("http://127.0.0.1:")
    adapters = {r["fields"]["adapters"] for r in target["routes"].values()}
    assert len(adapters) == 3 and all(Path(a, "adapters.safetensors").is_file() for a in adapters)
    # The managed server was stopped (SIGTERM) and is gone.
    assert target["exit_code"] is not None and not target.get("exited_mid_run")
    assert _gone(target["pid"])
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"]) > 10
    assert all(r["ok"] and r["http_status"] == 200 for r in records), [
        r["error"] for r in records if not r["ok"]
    ]
    assert {r["project"] for r in records} == set(target["routes"])
    analyze = [r for r in records if r["op"] == "analyze"]
    assert analyze and all(0 < r["ttft"] <= r["service"] <= r["duration"] for r in analyze)
    assert all(r["tokens_out"] >= 1 for r in analyze)
    assert any(r["tokens_out"] > 1 and r["itl"] > 0 for r in analyze)
    assert all(json.loads(r["served"])["adapters"] in adapters for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["tokens_out"] == sum(r["tokens_out"] for r in records)
    assert 0 < summary["switches"] < len(records)  # inferred from the order requests were sent
    assert summary["ttft_by_op"]["analyze"]["p50"] > 0
    # The server process, profiled as the role "server".
    timeline = read_jsonl(run / "timeline.jsonl")
    mine = [row for row in timeline if row["role"] == "server"]
    assert len(mine) >= 3 and all(row["rss"] > 0 for row in mine)
    assert any(row["cpu_percent"] > 0 for row in mine) and any(row["uss"] for row in mine)
    assert all(row["threads"] > 1 and row["fds"] > 3 for row in mine)
    collapsed = (run / "profiles" / "server.collapsed").read_text()
    assert "mlx_lm" in collapsed and "server.py" in collapsed
    # The verdict: what adapter changes cost the server, with its evidence.
    analysis = json.loads((run / "analysis.json").read_text())
    kinds = [f["kind"] for f in analysis["findings"]]
    assert "adapter_change" in kinds, kinds
    finding = analysis["findings"][kinds.index("adapter_change")]
    evidence = finding["evidence"]
    assert evidence["changed"] == summary["switches"] and evidence["requests"] == len(records)
    main = evidence["by_op"]["analyze"]
    assert main["p50_first_token_changed_s"] > main["p50_first_token_unchanged_s"]
    assert 0 <= evidence["server_load_share"] <= 1 and evidence["server_busy_samples"] > 0
    assert any("no MLX counters" in note for note in analysis["notes"])
    report = (run / "report.html").read_text()
    assert "Not available for stack mlx-lm" in report and "adapter changes cost" in report
    assert (run / "server.log").read_text()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ctrl_c_stops_the_managed_server_too(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc = start(results, cache_dir, "--profile", PROFILE, "--stack", "mlx-lm")
    wait_for(records_written(results, 3), proc, timeout=240)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    seconds, err = finish(proc, 60)
    assert proc.returncode == 130, err[-2000:]
    info = json.loads((only_run(results) / "run.json").read_text())
    assert info["status"] == "interrupted" and info["stack"]["exit_code"] is not None
    assert _gone(info["stack"]["pid"]) and seconds < 30


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise AssertionError("the test server exited before it answered")
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the test server never answered")


def run_against_odd_server(
    results: Path, cache: Path, server_args: list[str], *flags: str
) -> tuple[subprocess.CompletedProcess[str], subprocess.Popen[str]]:
    """A run of :data:`PROFILE` (and ``flags``) against tests/oddserver.py started with
    ``server_args``; the server is stopped after it. The run and the server's process."""
    from workloads.stack.mlx_server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    odd = str(ROOT / "tests" / "oddserver.py")
    server = subprocess.Popen([sys.executable, odd, str(port), *server_args])
    try:
        _wait_up(url, server)
        proc = run_cli(
            *("--profile", PROFILE, *flags, "--stack", "openai", "--stack-url", url),
            *("--results-dir", str(results), "--no-fail-on-targets"),
            cache=cache,
        )
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    return proc, server


def test_a_server_that_fails_leaves_error_records(tmp_path, cache_dir):
    results = tmp_path / "results"
    proc, server = run_against_odd_server(results, cache_dir, ["40"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert server.returncode == 3  # it died mid-run, as planned
    run = only_run(results)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["stack"]["pid"] == server.pid
    records = run_records(run)
    assert len(records) == sum(s["issued"] for s in info["stages"]) > 40
    refused = [r for r in records if r["http_status"] == 500]
    assert refused and all("HTTP 500: boom: model odd-model refused" in r["error"] for r in refused)
    garbled = [r for r in records if r["error"] and r["error"].startswith("BadResponse: not JSON")]
    assert garbled and all(r["http_status"] == 200 for r in garbled)
    good = [r for r in records if r["ok"]]
    assert good and all(r["tokens_out"] == 3 and r["ttft"] > 0 for r in good)
    # After it died: records of requests nothing answered, and the run went on to its end.
    unanswered = [r for r in records if not r["ok"] and r["http_status"] == 0]
    assert len(unanswered) > 5
    assert max(r["sent"] for r in unanswered) > max(r["sent"] for r in good)
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["findings"][0]["kind"] == "errors"
    timeline = read_jsonl(run / "timeline.jsonl")
    assert any(row["role"] == "server" for row in timeline)  # found listening on the port


def test_a_stalled_stream_an_error_event_and_a_split_event_are_each_named(tmp_path, cache_dir):
    results = tmp_path / "results"
    flags = ("--duration", "8", "--no-profile", "--read-timeout", "1")
    proc, _ = run_against_odd_server(results, cache_dir, ["100000", "stall"], *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = run_records(only_run(results))
    stalled = [r for r in records if (r["error"] or "").startswith("ReadTimeout")]
    assert stalled and all("stalled for 1 s" in r["error"] for r in stalled)
    assert all(r["service"] < 3.0 for r in stalled)  # not held for the whole reply's timeout
    errors = [r for r in records if (r["error"] or "").startswith("StreamError")]
    assert errors and all("out of memory" in r["error"] for r in errors)
    good = [r for r in records if r["ok"]]
    assert {r["tokens_out"] for r in good} == {2, 3}  # the event split over two lines counts
    gapped = [r for r in good if r["tokens_out"] == 3]
    assert all(0.04 < r["itl_p50"] <= r["itl_p99"] < 1.0 for r in gapped)
    assert all(r["ttft_planned"] >= r["ttft"] > 0 for r in good)


# --- pure parts: the stream tally and the mapping file ----------------------------------------


def _chunk(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def test_stream_tally_times_first_token_and_tokens_after_it() -> None:
    from workloads.stack.http import SseReader, StreamTally

    tally = StreamTally(sent=10.0)
    reader = SseReader()
    assert reader.feed(b": keep-alive\n") == [] and reader.feed(b"data: [DONE]\n") == []
    (first,) = reader.feed(b'data: {"choices": [{"index": 0, "text": ""}]}\n')
    assert tally.add(first, 10.1) is None
    for k, text in enumerate(["a", "b", "c", "d"]):
        tally.add(_chunk(text, "length" if text == "d" else None), 10.5 + k * (0.1 + k * 0.1))
    tally.add({"choices": [], "usage": {"completion_tokens": 7}}, 10.9)
    assert tally.ttft == pytest.approx(0.5)  # the first text, not the empty first event
    assert tally.tokens == 7 and tally.finish == "length"  # the server's own count
    assert tally.itl == pytest.approx(1.2 / 6)
    p50, p99 = tally.gap_quantiles()  # gaps 0.2, 0.4, 0.6: per chunk, not one mean
    assert p50 == pytest.approx(0.4) and p99 == pytest.approx(0.596)
    chat = StreamTally(sent=0.0)
    chat.add({"choices": [{"delta": {"content": "hi"}}]}, 0.2)
    assert chat.tokens == 1 and chat.ttft == pytest.approx(0.2) and chat.itl == 0.0
    # An end of sequence first: answered, no text; the first event is the first token.
    empty = StreamTally(sent=0.0)
    empty.add(_chunk("", "stop"), 0.3)
    assert empty.answered and empty.tokens == 0 and empty.ttft == pytest.approx(0.3)
    assert not StreamTally(sent=0.0).answered
    assert StreamTally(0.0).gap_quantiles() == (0.0, 0.0)
    reader = SseReader()
    (bad,) = reader.feed(b"data: {not json}\n") + reader.feed(b"\n")
    assert (StreamTally(0.0).add(bad, 1.0) or "").startswith("BadResponse: not JSON")


def test_sse_reader_joins_multi_line_events_and_names_mid_stream_errors() -> None:
    from workloads.stack.http import SseReader, StreamTally

    reader = SseReader()
    lines = [b'data: {"choices": [{"text":\n', b'data: "a b"}]}\n', b"\n"]
    events = [e for line in lines for e in reader.feed(line)]
    assert events == [{"choices": [{"text": "a b"}]}]  # two data lines, one event
    lines = [b"event: error\n", b'data: {"message": "out of memory"}\n', b"\n"]
    (error,) = [e for line in lines for e in reader.feed(line)]
    named = StreamTally(0.0).add(error, 1.0) or ""
    assert named.startswith("StreamError") and "out of memory" in named
    (inline,) = reader.feed(b'data: {"error": {"message": "adapter not found"}}\n')
    assert "adapter not found" in (StreamTally(0.0).add(inline, 1.0) or "")
    assert reader.feed(b"data: {not json\n") == [] and reader.end() == [{"_bad": "{not json"}]


def test_mapping_file_routes_projects_and_names_its_mistakes(tmp_path) -> None:
    from datamodel.errors import ConfigError
    from workloads.stack.http import load_routes

    good = tmp_path / "routes.toml"
    good.write_text(
        '[default]\nmodel = "base"\n[projects.api]\nmodel = "api-lora"\napi = "chat"\n'
        '[projects.web]\nfields = { adapters = "/a/web" }\n'
    )
    routes = load_routes(good, ["api", "web", "cli"])
    assert (routes["api"].model, routes["api"].api) == ("api-lora", "chat")
    assert routes["web"].model == "base" and routes["web"].fields == {"adapters": "/a/web"}
    assert routes["cli"].model == "base" and routes["cli"].api == "completions"
    for text, message in [
        ("[defaults]\n", "unknown keys ['defaults']"),
        ('[projects.api]\nmodel = "x"\n', "no model for project 'web'"),
        ('[default]\nmodel = "x"\napi = "soap"\n', "api of 'api' is 'soap'"),
        ("model = [", "not readable TOML"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_routes(bad, ["api", "web"])
