"""Load generators: async Ray actors that act as users of many projects at once.

A worker runs one stage at a time. Closed loop: ``users`` coroutines, each issuing one
operation, waiting for it, thinking, and going again. Open loop: operations fire at
their planned arrival times whether or not earlier ones have finished. Every issued
operation yields exactly one :class:`OpRecord` (a failure or a timeout is a record);
the driver drains them every second, so a stop or a crash loses nothing already done.
Nothing here busy-waits: the event loop sleeps until the next arrival or reply.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import ray

from datamodel.records import OpRecord
from workloads.load.shapes import OpPicker, ProjectPicker

QUERIES = (
    "how is the connection closed after an error",
    "parse the headers of a request",
    "where are retries and timeouts handled",
    "read a configuration file and validate it",
    "class that caches results in memory",
    "function that encodes text to bytes",
    "how are exceptions raised for invalid input",
    "iterate over the items and build a list",
)
EMBED_TEXTS = (
    "def add(a, b):\n    return a + b",
    "class Stack:\n    def __init__(self):\n        self.items = []",
    "for line in open(path):\n    print(line.strip())",
    "import json\nconfig = json.loads(text)",
    "async def fetch(session, url):\n    return await session.get(url)",
    "raise ValueError(f'bad value: {value!r}')",
    "with lock:\n    counter += 1",
    "return sorted(items, key=lambda x: x.name)",
)
REPLY_TIMEOUT_S = 300.0
STOP_GRACE_S = 5.0
"""After a stop, how long operations in flight may still finish before they are recorded as
interrupted (so a stop is bounded even behind a long queue)."""


@ray.remote(num_cpus=0, max_concurrency=1000)  # type: ignore[call-overload]
class GeneratorWorker:
    """Worker ``worker``: issues operations to replicas by project affinity."""

    def __init__(
        self,
        worker: int,
        replicas: list[Any],
        routes: dict[str, int] | None,
        http: dict[str, Any] | None = None,
    ) -> None:
        """``routes`` maps each project to its replica (``None`` spreads ops at random);
        ``http`` (an :class:`~workloads.stack.http.HttpPlan` as a dict) sends every op to an
        HTTP stack instead, from this worker itself. Records get ids
        ``<worker>-<sequence>``: a replacement gets a worker number of its own."""
        self.worker = worker
        self.replicas = replicas
        self.routes = routes
        self.http = http
        self._session: Any = None
        self._records: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._in_flight = 0
        self._pending: dict[str, dict[str, Any]] = {}
        """Operations sent and not recorded yet: what would be lost with this worker."""
        self._issued = 0
        self._calls: dict[tuple[str, str, int], Any] = {}

    async def info(self) -> dict[str, Any]:
        """This worker's pid and node, for the profiler's roles."""
        import os

        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    async def stop(self) -> None:
        """Stop issuing; operations in flight still finish and are recorded."""
        self._stop.set()

    async def resume(self) -> None:
        """Issue again after :meth:`stop` (a capacity search's next level)."""
        self._stop.clear()

    async def drain(self) -> dict[str, Any]:
        """Hand over the records finished since the last drain, plus live counters and the
        operations still in flight (the driver records them as lost if this worker dies)."""
        records, self._records = self._records, []
        return {
            "records": records,
            "in_flight": self._in_flight,
            "issued": self._issued,
            "pending": list(self._pending.values()),
        }

    def _request(self, op: str, project: str, rng: random.Random) -> dict[str, Any]:
        request: dict[str, Any] = {"op": op, "project": project, "query": rng.choice(QUERIES)}
        if op == "embed":
            request["texts"] = [rng.choice(EMBED_TEXTS) for _ in range(8)]
        return request

    async def _issue(
        self, stage: str, op: str, project: str, rng: random.Random, planned: float
    ) -> None:
        """Send one op due at ``planned`` (``time.perf_counter()`` clock) and record it."""
        if self.http is not None:
            replica = 0
        elif self.routes:
            replica = self.routes[project]
        else:
            replica = rng.randrange(len(self.replicas))
        sent = time.perf_counter()
        unix_sent = time.time()
        record = OpRecord(
            id=f"{self.worker}-{self._issued}",
            op=op,
            project=project,
            stage=stage,
            worker=self.worker,
            replica=replica,
            planned=unix_sent - (sent - planned),
            sent=unix_sent,
            lag=max(0.0, sent - planned),
        )
        self._issued += 1
        self._in_flight += 1
        self._pending[record.id] = record.as_dict()
        try:
            if self.http is not None:
                await self._http_call(record, op, project, rng, sent)
                return
            key = (op, project, replica)
            call = self._calls.get(key)
            if call is None:  # named per op and project, for the dashboard; built once
                call = self.replicas[replica].call.options(name=f"{op}:{project}@replica-{replica}")
                self._calls[key] = call
            ref = call.remote(self._request(op, project, rng))
            reply = await asyncio.wait_for(ref, timeout=REPLY_TIMEOUT_S)
            record.ok = bool(reply["ok"])
            record.error = reply["error"]
            record.stages = reply["stages"]
            record.service = reply["service"]
            record.wait = max(0.0, reply["start"] - unix_sent)
            record.misses = reply.get("misses") or []
            record.flops = reply.get("flops") or 0.0
            record.node = reply["node"]
            record.pid = reply["pid"]
            record.switched = reply["switched"]
        except TimeoutError:
            record.error = f"Timeout: no reply in {REPLY_TIMEOUT_S:.0f} s"
        except asyncio.CancelledError:
            record.error = f"Interrupted: no reply within {STOP_GRACE_S:.0f} s of the stop"
            raise
        except Exception as exc:  # a dead replica, a lost object: the op failed, the run goes on
            record.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            record.duration = time.perf_counter() - planned
            self._in_flight -= 1
            self._pending.pop(record.id, None)
            self._records.append(record.as_dict())

    async def _http_call(
        self, record: OpRecord, op: str, project: str, rng: random.Random, sent: float
    ) -> None:
        """One op against the HTTP stack: a streamed completion (``analyze``, ``switch``)
        or an embeddings request; times to first token and between tokens recorded."""
        import aiohttp

        from workloads.stack.http import StreamTally, parse_sse

        plan = self.http or {}
        if self._session is None:  # one session: connections are reused
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REPLY_TIMEOUT_S, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=0),
            )
        route = plan["routes"][project]
        record.served = json.dumps({"model": route["model"], **route["fields"]}, sort_keys=True)
        url = plan["url"].rstrip("/")
        if op == "embed":
            texts = [rng.choice(EMBED_TEXTS) for _ in range(8)]
            body: dict[str, Any] = {"model": route["model"], "input": texts}
            async with self._session.post(f"{url}/v1/embeddings", json=body) as reply:
                record.http_status = reply.status
                text = await reply.text()
            if reply.status != 200:
                record.error = f"HTTP {reply.status}: {text[:200]}"
            else:
                record.ok = "embedding" in text
                record.error = None if record.ok else f"BadResponse: {text[:200]}"
            record.service = time.perf_counter() - sent
            record.stages = {"embed": record.service}
            return
        snippet = rng.choice(plan["snippets"].get(project) or [""])
        prompt = f"# {rng.choice(QUERIES)}\n{snippet}"[: plan["prompt_chars"]]
        chat = route.get("api") == "chat"
        body = {
            "model": route["model"],
            **route["fields"],
            **({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}),
            "stream": True,
            "max_tokens": plan["max_tokens"] if op == "analyze" else 1,
            "temperature": 0.0,
            "stream_options": {"include_usage": True},
        }
        tally = StreamTally(sent)
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"
        async with self._session.post(f"{url}{endpoint}", json=body) as reply:
            record.http_status = reply.status
            if reply.status != 200:
                record.error = f"HTTP {reply.status}: {(await reply.text())[:200]}"
                record.service = time.perf_counter() - sent
                return
            async for line in reply.content:
                try:
                    event = parse_sse(line)
                except ValueError:
                    record.error = f"BadResponse: not JSON: {line[:120]!r}"
                    break
                if event is not None:
                    tally.add(event, time.perf_counter())
        record.service = time.perf_counter() - sent
        record.stages = {"model": record.service}
        record.ttft, record.itl, record.tokens_out = tally.ttft, tally.itl, tally.tokens
        if record.error is None and not tally.answered:
            record.error = "BadResponse: the stream carried no completion"
        record.ok = record.error is None

    def _cost(self, cpu0: float, wall0: float, issued0: int) -> dict[str, Any]:
        return {
            "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
            "issued": self._issued - issued0,
        }

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; returns whether it was stopped."""
        if seconds <= 0:
            return self._stop.is_set()
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def run_closed(
        self,
        stage: str,
        *,
        users: int,
        duration_s: float,
        think_time_s: float,
        mix: list[tuple[str, float]],
        projects: list[str],
        popularity: str,
        zipf_s: float,
        seed: int,
    ) -> dict[str, Any]:
        """``users`` concurrent users for ``duration_s``; returns this worker's CPU cost."""
        cpu0, wall0, issued0 = time.process_time(), time.perf_counter(), self._issued
        deadline = wall0 + duration_s
        ops = OpPicker(mix)
        picker = ProjectPicker(projects, popularity, zipf_s)

        async def user(k: int) -> None:
            rng = random.Random(seed * 1_000_003 + k)
            while time.perf_counter() < deadline and not self._stop.is_set():
                await self._issue(stage, ops.pick(rng), picker.pick(rng), rng, time.perf_counter())
                if await self._sleep_or_stop(min(think_time_s, deadline - time.perf_counter())):
                    break

        await self._finish([asyncio.create_task(user(k)) for k in range(users)])
        return self._cost(cpu0, wall0, issued0)

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for ``tasks``; once stopped, give them :data:`STOP_GRACE_S`, then cancel the
        rest (each cancelled operation still leaves its record)."""
        if not tasks:
            return
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            stop = asyncio.create_task(self._stop.wait())
            _, pending = await asyncio.wait(pending | {stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in pending:
                pending.discard(stop)
                stop.cancel()
                continue
            pending.discard(stop)
            if pending:
                _, late = await asyncio.wait(pending, timeout=STOP_GRACE_S)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            return

    async def run_open(
        self, stage: str, *, arrivals: list[tuple[float, str, str]], seed: int
    ) -> dict[str, Any]:
        """Fire each ``(at_s, op, project)`` at its time; wait for all replies at the end."""
        cpu0, wall0, issued0 = time.process_time(), time.perf_counter(), self._issued
        rng = random.Random(seed)
        pending: set[asyncio.Task[None]] = set()
        for at_s, op, project in arrivals:
            if await self._sleep_or_stop(wall0 + at_s - time.perf_counter()):
                break
            # Latency counts from the planned arrival: a late send is lag, not hidden.
            task = asyncio.create_task(self._issue(stage, op, project, rng, wall0 + at_s))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await self._finish(list(pending))
        return self._cost(cpu0, wall0, issued0)
