"""HTTP stacks: any OpenAI-compatible server, called by the generator workers directly.

A project's requests carry its routing: a ``model`` name and any extra fields (mlx-lm's
per-request ``"adapters"``, or a server's own LoRA field), from a mapping file::

    [default]
    model = "my-base-model"
    api = "chat"                        # /v1/chat/completions (default: /v1/completions)

    [projects.api]
    model = "api-lora"                  # servers that serve LoRA adapters as models
    fields = { adapters = "/path/to/api-adapter" }

``analyze`` is a streamed completion (text, or chat with ``api = "chat"``) whose prompt is
built from the project's code; ``switch`` the same with one token (it makes the server take
up the project's adapter); ``embed`` goes to ``/v1/embeddings`` where the server offers it.
Each record gets the time to first token (from the send, and from the planned send), the
mean, median and p99 time between tokens, the tokens received, and the HTTP status (and
the start of the error body when it is not 200).
"""

from __future__ import annotations

import http.client
import json
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamodel.errors import ConfigError

HTTP_OPS = frozenset({"analyze", "switch"})
"""Ops every HTTP stack serves; ``embed`` too where the server offers embeddings."""
APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
"""Completion endpoints a route may use, by the name a mapping file gives them."""
CONNECT_TIMEOUT_S = 5.0
"""How long the first contact with a server may take before it counts as unreachable."""


@dataclass(frozen=True)
class Routing:
    """What a project's requests carry: the ``model`` and extra body fields."""

    model: str
    fields: dict[str, Any] = field(default_factory=dict)
    api: str = "completions"
    """``completions`` (``/v1/completions``) or ``chat`` (``/v1/chat/completions``)."""

    @property
    def key(self) -> str:
        """What the server is asked to serve: the model and fields, as one string."""
        return json.dumps({"model": self.model, **self.fields}, sort_keys=True)


@dataclass(frozen=True)
class HttpPlan:
    """Everything a generator worker needs to call an HTTP stack (plain data for Ray)."""

    url: str
    """The server's base URL, e.g. ``http://127.0.0.1:8080``."""
    routes: dict[str, dict[str, Any]]
    """Project -> ``{"model": ..., "fields": {...}}``."""
    snippets: dict[str, list[str]]
    """Project -> code the prompts are built from."""
    max_tokens: int = 16
    """Tokens asked for per ``analyze``."""
    prompt_chars: int = 1200
    """Most characters of code in one prompt."""
    embeddings: bool = False
    """Whether the server answers ``/v1/embeddings``."""
    read_timeout_s: float = 60.0
    """Longest silence in a reply before it counts as stalled."""


def load_routes(path: Path, projects: list[str]) -> dict[str, Routing]:
    """Routing per project from a mapping file (see the module docstring)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--stack-map {path}: not readable TOML: {exc}") from None
    unknown = set(data) - {"default", "projects"}
    if unknown:
        raise ConfigError(
            f"--stack-map {path}: unknown keys {sorted(unknown)} "
            "(expected [default] and [projects.NAME])"
        )
    default = data.get("default") or {}
    tables = data.get("projects") or {}
    routes = {}
    for name in projects:
        table = {**default, **(tables.get(name) or {})}
        if not isinstance(table.get("model"), str):
            raise ConfigError(
                f"--stack-map {path}: no model for project {name!r} "
                "(set [default] model or [projects.NAME] model)"
            )
        fields = table.get("fields") or {}
        if not isinstance(fields, dict):
            raise ConfigError(f"--stack-map {path}: fields of {name!r} must be a table")
        api = table.get("api", "completions")
        if api not in APIS:
            raise ConfigError(
                f"--stack-map {path}: api of {name!r} is {api!r}; expected one of {', '.join(APIS)}"
            )
        routes[name] = Routing(table["model"], dict(fields), api)
    return routes


def _request(url: str, body: Mapping[str, Any] | None, timeout: float) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def probe(url: str, *, timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Any]:
    """Check that a server answers at ``url``; what it lists under ``/v1/models``.

    Raises :class:`ConfigError` when nothing answers. A server that answers but lists no
    models (an error status, or not JSON) gives ``models: []`` and the reason in
    ``problem``: a mapping file can still name its models.
    """
    try:
        status, body = _request(f"{url.rstrip('/')}/v1/models", None, timeout)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ConfigError(f"--stack-url {url}: nothing answers ({exc})") from None
    text = body[:200].decode(errors="replace")
    if status != 200:
        return {"models": [], "problem": f"/v1/models answered HTTP {status}: {text}"}
    try:
        listed = json.loads(body)
    except ValueError:
        return {"models": [], "problem": f"/v1/models did not answer JSON ({text[:120]!r})"}
    data = listed.get("data") if isinstance(listed, dict) else None
    models = [m.get("id") for m in data or [] if isinstance(m, dict)]
    return {"models": models, "problem": None if models else "/v1/models lists no model"}


def offers_embeddings(url: str, model: str, *, timeout: float = 30.0) -> bool:
    """Whether ``url`` answers a one-text ``/v1/embeddings`` request for ``model``."""
    try:
        status, body = _request(
            f"{url.rstrip('/')}/v1/embeddings", {"model": model, "input": ["x"]}, timeout
        )
    except (OSError, ValueError):
        return False
    return status == 200 and b"embedding" in body


def wait_until_up(url: str, *, timeout: float, alive: Any = None) -> None:
    """Poll until the server is ready: ``/health`` answers 200 (or, where there is no such
    endpoint, anything answers); ``alive()`` false means it died."""
    deadline = time.monotonic() + timeout
    last = "nothing answered"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ConfigError(f"the server at {url} exited before it answered")
        try:
            status, body = _request(f"{url.rstrip('/')}/health", None, 2.0)
            if status == 200 or status == 404:
                return
            last = f"/health answered HTTP {status}: {body[:120].decode(errors='replace')}"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = str(exc)
        time.sleep(0.3)
    raise ConfigError(f"the server at {url} did not answer within {timeout:.0f} s ({last})")


class SseReader:
    """Server-sent events from the lines of a stream, one event per blank-line-ended block
    (the protocol's own framing): its ``data:`` lines joined by newlines and parsed as JSON.

    :meth:`feed` returns the events a line completes. Comments, keep-alives and ``[DONE]``
    give none. A payload that is not a JSON object gives ``{"_bad": payload}``; an
    ``event: error`` block, or a payload with an ``error`` member, gives ``{"_error": ...}``
    (a server's mid-stream error). Servers that end each ``data:`` line with a single
    newline are read too: a complete JSON payload ends its event at once."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._kind = ""

    def feed(self, line: bytes) -> list[dict[str, Any]]:
        """Take one line of the stream; the events it completes."""
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            return self._dispatch()
        if text.startswith(":"):
            return []
        name, _, value = text.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._kind = value.strip()
        elif name == "data":
            self._data.append(value)
            joined = "\n".join(self._data).strip()
            if joined == "[DONE]" or _is_json_object(joined):
                return self._dispatch()
        return []

    def end(self) -> list[dict[str, Any]]:
        """The event left open when the stream ended, if any."""
        return self._dispatch()

    def _dispatch(self) -> list[dict[str, Any]]:
        payload, kind = "\n".join(self._data).strip(), self._kind
        self._data, self._kind = [], ""
        if not payload or payload == "[DONE]":
            return [{"_error": kind}] if kind == "error" else []
        try:
            parsed = json.loads(payload)
        except ValueError:
            return [{"_bad": payload[:120]}]
        if not isinstance(parsed, dict):
            return [{"_bad": payload[:120]}]
        if kind == "error" or "error" in parsed:
            return [{"_error": parsed.get("error", parsed)}]
        return [parsed]


def _is_json_object(text: str) -> bool:
    if not (text.startswith("{") and text.endswith("}")):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def chunk_text(event: Mapping[str, Any]) -> str:
    """The text a completion (or chat) chunk carries."""
    choices = event.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    delta = first.get("delta") or {}
    return str(first.get("text") or delta.get("content") or "")


class StreamTally:
    """What a streamed completion's events say, as they arrive (pure: times are given).

    The time to first token is when the first text arrived (else the first event with a
    choice: a reply of no text, such as an end-of-sequence first, still answered); output
    tokens are the server's own count (``usage.completion_tokens``) where it sends one, else
    the chunks that carried text; the inter-token latency is the mean time per token after
    the first, and the gaps between chunks of text are kept for their median and p99.
    """

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.first_event = 0.0
        self.first_text = 0.0
        self.last_text = 0.0
        self.chunks = 0
        self.gaps: list[float] = []
        self.usage_tokens: int | None = None
        self.finish: str | None = None

    def add(self, event: Mapping[str, Any], now: float) -> str | None:
        """Take one event (from :class:`SseReader`) received at ``now``; the error it
        carries, if it is an error event or not JSON."""
        if "_bad" in event:
            return f"BadResponse: not JSON: {event['_bad']!r}"
        if "_error" in event:
            detail = event["_error"]
            if isinstance(detail, dict):
                detail = detail.get("message") or json.dumps(detail)[:200]
            return f"StreamError: the server sent an error mid-stream: {detail}"[:300]
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]
        choices = event.get("choices")
        if not choices:
            return None
        self.first_event = self.first_event or now
        if chunk_text(event):
            if self.first_text:
                self.gaps.append(now - self.last_text)
            self.first_text = self.first_text or now
            self.last_text = now
            self.chunks += 1
        first = choices[0] if isinstance(choices[0], dict) else {}
        if first.get("finish_reason"):
            self.finish = str(first["finish_reason"])
        return None

    @property
    def answered(self) -> bool:
        """Whether any choice arrived at all."""
        return bool(self.first_event)

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.chunks

    @property
    def ttft(self) -> float:
        first = self.first_text or self.first_event
        return first - self.sent if first else 0.0

    @property
    def itl(self) -> float:
        if self.tokens < 2 or not self.first_text:
            return 0.0
        return (self.last_text - self.first_text) / (self.tokens - 1)

    def gap_quantiles(self) -> tuple[float, float]:
        """Median and 99th percentile of the gaps between chunks of text (0 with none)."""
        if not self.gaps:
            return 0.0, 0.0
        import numpy as np

        p50, p99 = np.quantile(np.asarray(self.gaps), [0.5, 0.99])
        return float(p50), float(p99)
