"""Collapsed stacks (py-spy's ``--format raw``): read, merge and rank, as plain data.

A profile is ``Stacks``: ``"root;frame;...;leaf" -> sample count``, one ``stack COUNT`` per
line on disk. Frame text is opaque, except that :func:`strip_line_numbers` drops a trailing
``:line`` so that samples of one function merge. Drawing lives in
:mod:`profiling.render.flamegraph`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

Stacks = dict[str, int]
"""Collapsed stacks: ``"root;frame;...;leaf" -> samples``."""

_LINE_NUMBER = re.compile(r":\d+(?=\)$)|:\d+$")


class FrameShare(NamedTuple):
    """One frame's samples and their share of all samples."""

    frame: str
    """Frame text."""
    samples: int
    """Samples attributed to it."""
    share: float
    """``samples / total samples`` (0..1)."""


WALL_STATES = ("[cpu]", "[runq]", "[native]", "[wait:threads]", "[wait]")
"""The leaf pseudo-frames of a wall-clock profile's stacks (``profiles/<role>.wall``, see
:mod:`profiling.capture.wallclock`): what a request's thread was doing."""
RUNNING = ("[cpu]", "[runq]")
"""States in which a request's own thread ran, or was ready to and waited for a core."""
NATIVE = "[native]"
"""The state in which a request's thread waited while native threads computed for it."""
WAITING = ("[wait:threads]", "[wait]")
"""States in which a request neither ran nor had work done for it."""


def parse_collapsed(lines: Sequence[str]) -> Stacks:
    """Parse collapsed-stack lines; blank or garbled lines are skipped, repeats add up."""
    stacks: Stacks = {}
    for line in lines:
        stack, _, count = line.strip().rpartition(" ")
        stack = stack.strip()
        if not stack or not count.isdigit() or not all(stack.split(";")):
            continue
        stacks[stack] = stacks.get(stack, 0) + int(count)
    return {s: n for s, n in stacks.items() if n > 0}


def read_collapsed(path: str | Path) -> Stacks:
    """Read a collapsed-stack file (see :func:`parse_collapsed`)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return parse_collapsed(text.splitlines())


def merge(*profiles: Mapping[str, int]) -> Stacks:
    """Sum the samples of several profiles stack by stack."""
    out: Stacks = {}
    for profile in profiles:
        for stack, count in profile.items():
            out[stack] = out.get(stack, 0) + count
    return out


def strip_frame_line(frame: str) -> str:
    """``"f (a.py:12)"`` -> ``"f (a.py)"`` and ``"a.py:12"`` -> ``"a.py"``; else unchanged."""
    return _LINE_NUMBER.sub("", frame, count=1)


def strip_line_numbers(stacks: Mapping[str, int]) -> Stacks:
    """The same profile with line numbers dropped, so stacks differing only there merge."""
    out: Stacks = {}
    for stack, count in stacks.items():
        key = ";".join(strip_frame_line(f) for f in stack.split(";"))
        out[key] = out.get(key, 0) + count
    return out


def _ranked(counts: Mapping[str, int], total: int) -> list[FrameShare]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [FrameShare(f, n, n / total if total else 0.0) for f, n in ordered]


def self_time(stacks: Mapping[str, int]) -> list[FrameShare]:
    """Leaf frames ranked by the samples spent in them (exclusive time)."""
    counts: dict[str, int] = {}
    for stack, count in stacks.items():
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] = counts.get(leaf, 0) + count
    return _ranked(counts, sum(stacks.values()))


def total_time(stacks: Mapping[str, int]) -> list[FrameShare]:
    """Frames ranked by the samples of stacks they appear in (inclusive; recursion once)."""
    counts: dict[str, int] = {}
    for stack, count in stacks.items():
        for frame in set(stack.split(";")):
            counts[frame] = counts.get(frame, 0) + count
    return _ranked(counts, sum(stacks.values()))
