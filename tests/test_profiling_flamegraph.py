"""Collapsed stacks, flame graph SVGs, speedscope export and profile diffs (pure)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from datamodel import stacks as st
from profiling.render import flamegraph as fg

SVG = "{http://www.w3.org/2000/svg}"
HEAD = 'replica-0;process 7:"ray::ServiceReplica.call";call (workloads/stack/replica.py:110)'
STACKS = {
    f"{HEAD};analyze (workloads/service/service.py:190);matmul (mlx/core.py:12)": 60,
    f"{HEAD};analyze (workloads/service/service.py:191);matmul (mlx/core.py:14)": 20,
    f"{HEAD};embed (workloads/service/embedder.py:50)": 15,
    "replica-0;thread (0x7f00);wait (threading.py:320)": 5,
}


def prefixes(stacks: dict[str, int]) -> set[tuple[str, ...]]:
    """Every frame node of the stack trie, as its path from the root."""
    out: set[tuple[str, ...]] = set()
    for stack in stacks:
        frames = tuple(stack.split(";"))
        out.update(frames[:i] for i in range(1, len(frames) + 1))
    return out


def parse(svg: str) -> ET.Element:
    assert "<script" not in svg and "href" not in svg
    return ET.fromstring(svg)


def test_read_collapsed_skips_blank_and_garbled_lines_and_adds_repeats(tmp_path: Path) -> None:
    path = tmp_path / "replica-0.collapsed"
    path.write_text(
        "a;b;c 3\n\n   \ngarbage\na;b 2\na;b;c 4\nno count \n;;; 5\na;b -1\na;b x\nd 0\n"
        "a;with space (f.py:1) 7"
    )
    assert st.read_collapsed(path) == {"a;b;c": 7, "a;b": 2, "a;with space (f.py:1)": 7}


def test_merge_sums_stack_by_stack() -> None:
    assert st.merge({"a;b": 1, "a": 2}, {"a;b": 3}, {}) == {"a;b": 4, "a": 2}


def test_strip_line_numbers_merges_stacks_differing_only_in_line_numbers() -> None:
    stripped = st.strip_line_numbers(STACKS)
    head = 'replica-0;process 7:"ray::ServiceReplica.call";call (workloads/stack/replica.py)'
    assert stripped[f"{head};analyze (workloads/service/service.py);matmul (mlx/core.py)"] == 80
    assert len(stripped) == 3
    assert sum(stripped.values()) == sum(STACKS.values())
    assert st.strip_frame_line("thread (0x7f00)") == "thread (0x7f00)"
    assert st.strip_frame_line("mod.py:12") == "mod.py"
    assert st.strip_frame_line('process 7:"ray::X"') == 'process 7:"ray::X"'


def test_self_time_ranks_leaf_frames_with_shares() -> None:
    ranked = st.self_time(st.strip_line_numbers(STACKS))
    assert [(f.frame, f.samples) for f in ranked] == [
        ("matmul (mlx/core.py)", 80),
        ("embed (workloads/service/embedder.py)", 15),
        ("wait (threading.py)", 5),
    ]
    assert ranked[0].share == pytest.approx(0.8)
    assert math.fsum(f.share for f in ranked) == pytest.approx(1.0)
    assert st.self_time({}) == []


def test_total_time_is_inclusive_and_counts_recursion_once() -> None:
    ranked = dict((f.frame, f.samples) for f in st.total_time({"r;f;f;g": 4, "r;h": 1}))
    assert ranked == {"r": 5, "f": 4, "g": 4, "h": 1}


def test_svg_is_well_formed_with_one_rect_per_frame_node_and_tooltips() -> None:
    stacks = {**STACKS, "replica-0;odd <name> & 'quotes'": 1}
    root = parse(fg.render_svg(stacks, "replica-0 <run>"))
    rects = root.findall(f".//{SVG}rect")
    assert len(rects) == len(prefixes(stacks))
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert titles[0] == "replica-0 <run>"
    for frame in {f for p in prefixes(stacks) for f in p}:
        assert any(t.startswith(f"{frame} (") for t in titles), frame
    assert "replica-0 (101 samples, 100.00%)" in titles
    assert "odd <name> & 'quotes' (1 samples, 0.99%)" in titles
    widths = {float(r.get("width", 0)) for r in rects}
    assert max(widths) == pytest.approx(fg.WIDTH - 20)


def test_svg_colours_are_deterministic_and_labels_clipped() -> None:
    long_name = "a_very_long_function_name_that_cannot_fit_in_a_narrow_box " * 3
    stacks = {"root;wide": 999, f"root;{long_name}": 40}
    svg = fg.render_svg(stacks, "t")
    assert svg == fg.render_svg(dict(reversed(stacks.items())), "t")
    labels = [t.text or "" for t in parse(svg).iter(f"{SVG}text")]
    assert any(label.endswith("..") and label[:-2] in long_name for label in labels)
    assert long_name not in labels
    assert fg.frame_color("f (a.py:1)") == fg.frame_color("f (a.py:2)")


def test_svg_of_no_samples_is_valid_and_empty() -> None:
    root = parse(fg.render_svg({}, "empty"))
    assert root.findall(f".//{SVG}rect") == []


def test_svg_min_width_drops_subpixel_frames() -> None:
    stacks = {"r;big": 1_000_000, "r;tiny": 1}
    assert len(parse(fg.render_svg(stacks, "t")).findall(f".//{SVG}rect")) == 2
    assert len(parse(fg.render_svg(stacks, "t", min_width=0)).findall(f".//{SVG}rect")) == 3


def test_speedscope_frames_samples_and_weights_are_consistent() -> None:
    doc = json.loads(json.dumps(fg.to_speedscope(STACKS, "replica-0")))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = [f["name"] for f in doc["shared"]["frames"]]
    assert len(frames) == len(set(frames))
    (profile,) = doc["profiles"]
    assert profile["type"] == "sampled" and profile["unit"] == "none"
    assert profile["name"] == "replica-0"
    assert len(profile["samples"]) == len(profile["weights"])
    assert sum(profile["weights"]) == sum(STACKS.values()) == profile["endValue"]
    assert profile["startValue"] == 0
    rebuilt = {
        ";".join(frames[i] for i in sample): weight
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True)
    }
    assert rebuilt == STACKS


def test_diff_of_identical_profiles_is_all_zeros() -> None:
    assert set(fg.diff(STACKS, dict(STACKS)).values()) == {0.0}
    doubled = {k: 2 * v for k, v in STACKS.items()}
    assert all(v == pytest.approx(0.0) for v in fg.diff(STACKS, doubled).values())


def test_diff_gives_normalised_share_change_per_stack() -> None:
    change = fg.diff({"r;a": 3, "r;b": 1}, {"r;a": 1, "r;c": 1})
    assert change == pytest.approx({"r;a": 0.5 - 0.75, "r;b": -0.25, "r;c": 0.5})
    assert math.fsum(change.values()) == pytest.approx(0.0)
    assert fg.diff({}, {"r": 2}) == {"r": 1.0}


def test_diff_svg_is_red_where_frames_grew_and_blue_where_they_shrank() -> None:
    before, after = {"r;a": 3, "r;b": 1}, {"r;a": 1, "r;b": 3, "r;new": 1}
    root = parse(fg.render_diff_svg(before, after, "before -> after"))
    fills = {}
    for group in root.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title")
        rect = group.find(f"{SVG}rect")
        assert title is not None and rect is not None
        fills[(title.text or "").split(" (")[0]] = rect.get("fill")
    assert set(fills) == {"r", "a", "b", "new"}
    assert fills["r"] == "rgb(255,255,255)"
    assert fills["a"] == "rgb(55,55,255)"  # the largest change: full strength
    for grew in ("b", "new"):
        fill = fills[grew] or ""
        assert fill.startswith("rgb(255,") and fill != "rgb(255,255,255)"


def test_diff_svg_of_identical_profiles_is_neutral() -> None:
    root = parse(fg.render_diff_svg(STACKS, STACKS, "same"))
    fills = {r.get("fill") for r in root.iter(f"{SVG}rect")}
    assert fills == {"rgb(255,255,255)"}
    assert len(root.findall(f".//{SVG}rect")) == len(prefixes(STACKS))
