"""A finding's evidence for people: labelled rows with units, shared by the terminal and
the HTML report (``analysis.json`` keeps the raw numbers).

Each key names its unit, as the verdict code builds them: by its suffix (``_s`` seconds,
``_ms``, ``_mb``, ``_bytes``, ``_per_s`` a rate, ``_mb_per_min``, ``_ms_per_op``,
``_gflops``, ``_percent`` 0..100, ``_p`` a p-value), by a leading or inner time word
(``seconds_by_replica``, ``mean_s_by_op``, ``adapter_change_s_subtracted``,
``minutes_to_limit``) or by a word for a 0..1 fraction (``share``, ``utilisation``,
``fraction``, ``..._rate``), shown as a percent. A key with no unit of its own (a replica
number, an op name) takes its parent's. Nested dicts are flattened into paths
(``replica 0 · utilisation``), lists shortened, ``None`` and empty values left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from profiling.render.charts import format_value

SEP = " · "
"""Between the parts of a nested row's label."""
LIST_ITEMS = 3
"""Items a list shows before saying how many it has."""


class Row(NamedTuple):
    """One line of evidence: what it is, and its value in its unit."""

    label: str
    value: str


def _sig(value: float) -> str:
    """Three significant digits; whole numbers from 1,000 with thousands separators."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _percent(fraction: float) -> str:
    """A 0..1 fraction as a percent: whole from 10%, one decimal from 1%, else two digits."""
    pct = fraction * 100
    if pct == 0 or abs(pct) >= 10:
        return f"{pct:.0f}%"
    return f"{pct:.1f}%" if abs(pct) >= 1 else f"{pct:.2g}%"


def _plain(value: float) -> str:
    if isinstance(value, int) or value == int(value):
        return f"{int(value):,}"
    return _sig(value)


FORMATS: dict[str, Callable[[float], str]] = {
    "s": lambda v: format_value(v, "s"),
    "ms": lambda v: format_value(v / 1000, "s"),
    "ms_per_op": lambda v: format_value(v / 1000, "s") + "/op",
    "minutes": lambda v: f"{_sig(v)} min",
    "mb": lambda v: f"{_sig(v)} MB",
    "bytes": lambda v: format_value(v, "bytes"),
    "per_s": lambda v: f"{_sig(v)}/s",
    "mb_per_min": lambda v: f"{_sig(v)} MB/min",
    "gflops": lambda v: f"{_sig(v)} GFLOP/s",
    "percent": lambda v: f"{_sig(v)}%",
    "fraction": _percent,
    "ratio": lambda v: _percent(v) if 0 <= v <= 1 else f"×{_sig(v)}",
    "p": lambda v: "<0.001" if 0 <= v < 0.001 else f"{v:.2g}",
}
"""How a number in each unit is written."""

SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mb", "per", "min"), "mb_per_min"),
    (("ms", "per", "op"), "ms_per_op"),
    (("per", "s"), "per_s"),
    (("p", "value"), "p"),
    (("gflops",), "gflops"),
    (("bytes",), "bytes"),
    (("mb",), "mb"),
    (("ms",), "ms"),
    (("s",), "s"),
    (("seconds",), "s"),
    (("minutes",), "minutes"),
    (("percent",), "percent"),
    (("p",), "p"),
)
"""Key endings (as ``_``-separated words) and the unit they name; the first match wins.
They are dropped from the label, which the unit already says."""
TIME_WORDS = {"s": "s", "seconds": "s", "ms": "ms", "minutes": "minutes"}
"""Words that name a time unit anywhere in a key; read as the word ``time`` in its label."""
FRACTION_WORDS = {"share": "fraction", "utilisation": "fraction", "utilization": "fraction"}
FRACTION_WORDS |= {"fraction": "fraction", "ratio": "ratio"}
"""Words that make a key a 0..1 fraction (``ratio`` may exceed 1: then a factor)."""
SUFFIX_LABELS = {"p": "p-value"}
"""Units whose dropped ending is said in the label after all."""
ACRONYMS = {"cpu": "CPU", "blas": "BLAS", "mlx": "MLX", "rss": "RSS"}
LABELS = {
    "in_flight_mean": "mean in flight",
    "in_flight_max": "most in flight",
    "streaming_mean": "mean streaming",
    "little_in_flight": "in flight (Little's law)",
}
"""Keys whose label is not their words."""
PLURALS = {"replicas": "replica", "nodes": "node"}
"""Keys whose dict holds one entry per named thing: each entry is labelled ``replica 0``."""


def _words(key: str) -> list[str]:
    return [w for w in key.lower().split("_") if w]


def _split_unit(words: list[str]) -> tuple[list[str], str | None]:
    """The key's words without a unit ending, and the unit that ending names."""
    for ending, unit in SUFFIXES:
        if len(words) >= len(ending) and tuple(words[-len(ending) :]) == ending:
            rest = words[: -len(ending)]
            return rest + ([SUFFIX_LABELS[unit]] if unit in SUFFIX_LABELS else []), unit
    return words, None


def unit_of(key: str) -> str | None:
    """The unit a key names (a key of :data:`FORMATS`), or ``None``."""
    words = _words(key)
    _, unit = _split_unit(words)
    if unit is not None:
        return unit
    for word in words:
        found = TIME_WORDS.get(word) or FRACTION_WORDS.get(word)
        if found is not None:
            return found
    return "fraction" if words and words[-1] == "rate" else None


def _words_label(words: list[str]) -> str:
    return " ".join("time" if w in TIME_WORDS else ACRONYMS.get(w, w) for w in words)


def label(key: str) -> str:
    """A key made readable: ``wait_external_s`` -> ``wait external``, ``seconds`` -> ``time``,
    ``load_p`` -> ``load p-value``, ``mean_cpu_percent`` -> ``mean CPU``."""
    if key in LABELS:
        return LABELS[key]
    words, unit = _split_unit(_words(key))
    if not words and unit in TIME_WORDS.values():
        return "time"
    return _words_label(words) or key


def value_text(value: Any, unit: str | None = None, width: int = 120) -> str:
    """One value in ``unit`` (a key of :data:`FORMATS`): numbers at about three significant
    digits, booleans as yes/no, text cut at ``width`` characters."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return FORMATS[unit](value) if unit in FORMATS else _plain(value)
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | Mapping | list | tuple) and not value)


def _list_text(items: list[Any], unit: str | None, width: int) -> str:
    shown = [
        _item_text(v, unit, width) if isinstance(v, Mapping) else value_text(v, unit, width)
        for v in items[:LIST_ITEMS]
    ]
    if len(items) <= LIST_ITEMS:
        return ", ".join(shown)
    return f"{len(items)} items: " + ", ".join(shown) + ", …"


def _item_text(item: Mapping[str, Any], unit: str | None, width: int) -> str:
    """A dict in a list, on one line: its first text bare, then ``label value`` pairs."""
    parts: list[str] = []
    for k, v in item.items():
        if _empty(v):
            continue
        text = value_text(v, unit_of(str(k)) or unit, width)
        bare = not parts and isinstance(v, str)
        parts.append(text if bare else f"{label(str(k))} {text}")
    return SEP.join(parts)


def _child_path(key: str, child: str, value: Any, path: tuple[str, ...]) -> tuple[str, ...]:
    """The label path of entry ``child`` of the dict at ``key`` (whose own path is ``path``):
    ``replicas`` -> ``replica 0``; ``by_op`` -> ``op search``; ``seconds_by_replica`` ->
    ``time · replica 0`` (the heading only over plain values); else ``batching · in flight``."""
    words = _words(key)
    if key.lower() in PLURALS:
        return (*path[:-1], f"{PLURALS[key.lower()]} {child}")
    if "by" in words[:-1]:
        at = words.index("by")
        name = f"{' '.join(words[at + 1 :])} {child}"
        head = () if not at or isinstance(value, Mapping) else (_words_label(words[:at]),)
        return (*path[:-1], *head, name)
    return (*path, label(child))


def _rows(
    key: str, value: Any, path: tuple[str, ...], inherited: str | None, width: int
) -> Iterator[Row]:
    """Rows of one entry labelled ``path``: a value in its key's unit, else its parent's."""
    if _empty(value):
        return
    unit = unit_of(key) or inherited
    if isinstance(value, Mapping):
        entries = sorted(value.items(), key=lambda kv: isinstance(kv[1], Mapping))
        for k, v in entries:
            yield from _rows(str(k), v, _child_path(key, str(k), v, path), unit, width)
        return
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        for n, item in enumerate(value, 1):
            yield Row(f"{SEP.join(path)} {n}", _item_text(item, unit, width))
    elif isinstance(value, list | tuple):
        yield Row(SEP.join(path), _list_text(list(value), unit, width))
    else:
        yield Row(SEP.join(path), value_text(value, unit, width))


def evidence_rows(evidence: Mapping[str, Any], limit: int = 8, width: int = 120) -> list[Row]:
    """``evidence`` as at most ``limit`` rows: its own values first, in their order, then
    those of its nested dicts; when more would show, the last row (the only one with no
    value) says how many were left out. Text is cut at ``width`` characters."""
    entries = sorted(evidence.items(), key=lambda kv: isinstance(kv[1], Mapping))
    rows = [row for k, v in entries for row in _rows(str(k), v, (label(str(k)),), None, width)]
    if len(rows) <= limit:
        return rows
    kept = rows[: max(limit - 1, 0)]
    return [*kept, Row(f"and {len(rows) - len(kept)} more", "")]
