"""Flame graphs of collapsed stacks: static SVGs, differential SVGs and speedscope profiles.

The SVGs are static and self-contained (no script, no external resource): one ``<rect>``
per frame node, sized by inclusive samples, root at the bottom, a ``<title>`` tooltip per
frame and colours derived from the frame name, so the same function keeps its colour.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from datamodel.stacks import strip_frame_line

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

WIDTH = 1200
"""SVG width in pixels."""
FRAME_HEIGHT = 16
"""Height of one stack level in pixels."""
FONT_SIZE = 11
"""Label font size in pixels."""
_PAD = 10
_TITLE_HEIGHT = 28
_CHAR_WIDTH = FONT_SIZE * 0.59


@dataclass
class _Node:
    """A frame in the stack trie; ``values`` holds one weight per input profile."""

    name: str
    values: list[float]
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class _Box:
    node: _Node
    depth: int
    x: float
    width: float


def _trie(profiles: Sequence[Mapping[str, float]]) -> _Node:
    root = _Node("all", [0.0] * len(profiles))
    for channel, profile in enumerate(profiles):
        for stack, weight in profile.items():
            root.values[channel] += weight
            node = root
            for frame in stack.split(";"):
                child = node.children.get(frame)
                if child is None:
                    child = node.children[frame] = _Node(frame, [0.0] * len(profiles))
                child.values[channel] += weight
                node = child
    return root


def _layout(root: _Node, weight: float, min_width: float) -> list[_Box]:
    """Boxes of every node under ``root`` (not ``root`` itself), children sorted by name."""
    scale = (WIDTH - 2 * _PAD) / weight if weight > 0 else 0.0
    boxes: list[_Box] = []
    pending: list[tuple[_Node, int, float]] = [(root, -1, float(_PAD))]
    while pending:
        node, depth, x = pending.pop()
        for name in sorted(node.children):
            child = node.children[name]
            width = sum(child.values) / len(child.values) * scale
            if width >= min_width and width > 0:
                boxes.append(_Box(child, depth + 1, x, width))
                pending.append((child, depth + 1, x))
            x += width
    return boxes


def frame_color(frame: str) -> str:
    """A warm colour fixed by the frame's name (stable across runs and processes)."""
    h = zlib.crc32(strip_frame_line(frame).encode("utf-8", "replace"))
    return f"rgb({205 + h % 50},{60 + (h >> 8) % 150},{(h >> 16) % 55})"


def _diff_color(delta: float, scale: float) -> str:
    """Red for growth, blue for shrinkage, white for no change; ``scale`` = largest |delta|."""
    strength = min(abs(delta) / scale, 1.0) if scale > 0 else 0.0
    fade = round(255 - 200 * strength)
    return f"rgb(255,{fade},{fade})" if delta > 0 else f"rgb({fade},{fade},255)"


def _label(text: str, width: float) -> str:
    fits = int((width - 6) / _CHAR_WIDTH)
    if fits < 3:
        return ""
    return text if len(text) <= fits else text[: fits - 2] + ".."


def _svg(title: str, boxes: list[_Box], styles: Sequence[tuple[str, str]], note: str) -> str:
    """The SVG document; ``styles[i]`` is ``(fill, tooltip)`` of ``boxes[i]``."""
    depth = max((b.depth for b in boxes), default=0) + 1
    height = _TITLE_HEIGHT + depth * FRAME_HEIGHT + 2 * _PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Verdana,sans-serif" '
        f'font-size="{FONT_SIZE}" style="background:#f8f8f8">',
        f"<title>{escape(title)}</title>",
        f'<text x="{WIDTH / 2}" y="{_PAD + 12}" text-anchor="middle" font-size="15">'
        f"{escape(title)}</text>",
        f'<text x="{_PAD}" y="{_PAD + 12}" fill="#666">{escape(note)}</text>',
    ]
    base = height - _PAD
    for box, (fill, tooltip) in zip(boxes, styles, strict=True):
        y = base - (box.depth + 1) * FRAME_HEIGHT
        label = _label(box.node.name, box.width)
        parts.append(
            f"<g><title>{escape(tooltip)}</title>"
            f'<rect x="{box.x:.2f}" y="{y}" width="{box.width:.2f}" '
            f'height="{FRAME_HEIGHT - 1}" fill="{fill}" rx="2"/>'
            + (
                f'<text x="{box.x + 3:.2f}" y="{y + FRAME_HEIGHT - 4}">{escape(label)}</text>'
                if label
                else ""
            )
            + "</g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_svg(stacks: Mapping[str, int], title: str, *, min_width: float = 0.1) -> str:
    """A static flame graph of ``stacks`` as SVG text.

    Frames narrower than ``min_width`` pixels are left out (with their children), which
    keeps large profiles small; pass 0 to draw every frame.
    """
    root = _trie([stacks])
    total = root.values[0]
    boxes = _layout(root, total, min_width)
    styles = [
        (
            frame_color(b.node.name),
            f"{b.node.name} ({b.node.values[0]:.0f} samples, {b.node.values[0] / total:.2%})",
        )
        for b in boxes
    ]
    note = f"{total:.0f} samples" if total else "no samples"
    return _svg(title, boxes, styles, note)


def _normalised(stacks: Mapping[str, int]) -> dict[str, float]:
    total = sum(stacks.values())
    return {s: n / total for s, n in stacks.items()} if total else {}


def diff(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, float]:
    """Per stack, ``share in b - share in a`` (each side normalised by its own total)."""
    na, nb = _normalised(a), _normalised(b)
    return {s: nb.get(s, 0.0) - na.get(s, 0.0) for s in sorted(set(na) | set(nb))}


def render_diff_svg(
    a: Mapping[str, int], b: Mapping[str, int], title: str, *, min_width: float = 0.1
) -> str:
    """A differential flame graph from ``a`` (before) to ``b`` (after) as SVG text.

    Widths are the mean of both sides' normalised shares, so frames of either side show;
    a frame is red when its inclusive share grew, blue when it shrank, white when equal.
    """
    root = _trie([_normalised(a), _normalised(b)])
    boxes = _layout(root, 1.0, min_width)
    deltas = [b.node.values[1] - b.node.values[0] for b in boxes]
    scale = max((abs(d) for d in deltas), default=0.0)
    styles = [
        (
            _diff_color(d, scale),
            f"{box.node.name} (before {box.node.values[0]:.2%}, after {box.node.values[1]:.2%}, "
            f"change {d * 100:+.2f} points)",
        )
        for box, d in zip(boxes, deltas, strict=True)
    ]
    note = f"before {sum(a.values())} samples, after {sum(b.values())} samples"
    return _svg(title, boxes, styles, note)


def to_speedscope(stacks: Mapping[str, int], name: str) -> dict[str, Any]:
    """A speedscope file (``sampled`` profile, one sample per distinct stack, weighted)."""
    index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, count in sorted(stacks.items()):
        samples.append([index.setdefault(f, len(index)) for f in stack.split(";")])
        weights.append(count)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": [{"name": f} for f in index]},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "loadlens",
    }
