"""Load generators: async Ray actors that act as users of many projects at once.

A worker runs one stage at a time. Closed loop: ``users`` coroutines, each starting at its
own moment, issuing one operation, waiting for it, thinking (an exponentially distributed
time by default), and going again. Open loop: operations fire at their planned arrival
times whether or not earlier ones have finished, up to a cap on operations in flight;
past it an arrival is recorded as dropped at the generator. Every stage's times count from
one origin, the same for every worker, so a replacement worker issues the arrivals that
fell due while it was starting late, and their lag shows.

Every issued operation yields exactly one :class:`OpRecord` (a failure, a timeout or a
drop is a record). In a run, each worker writes its records into Parquet shards of its
own (:mod:`.shards`) at least every second and at every drain, and a drain hands the
driver counts only. A worker given no results folder hands its records over in drains
instead, keeping each batch until the driver acknowledges it (the next drain says so),
so a drain that times out loses nothing. The count of issued operations sits in a
shared-memory ledger (:mod:`.ledger`) that outlives the worker: the ids a dead worker
issued after its last drain are known. Nothing here busy-waits: the event loop sleeps
until the next arrival or reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

import ray

from datamodel.records import OpRecord
from workloads.load.ledger import Ledger
from workloads.load.shapes import OpPicker, ProjectPicker
from workloads.load.shards import FLUSH_S, Tally, WorkerShards

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
READ_TIMEOUT_S = 60.0
"""HTTP stacks: longest silence between two pieces of a reply before it counts as stalled
(``--read-timeout``)."""
CONNECT_TIMEOUT_S = 10.0
"""HTTP stacks: longest a connection may take to open."""
MAX_IN_FLIGHT = 1000
"""Default cap on one worker's operations in flight (and its HTTP connections)."""
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
        *,
        ledger: str | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        offsets: dict[str, float] | None = None,
        results: str | None = None,
        token: str = "",
        run_name: str = "",
    ) -> None:
        """``routes`` maps each project to its replica (``None`` spreads ops at random);
        ``http`` (an :class:`~workloads.stack.http.HttpPlan` as a dict) sends every op to an
        HTTP stack instead, from this worker itself. Records get ids
        ``<worker>-<sequence>``: a replacement gets a worker number of its own. ``ledger``:
        the path of this worker's issue counter; ``max_in_flight``: its cap on operations
        in flight; ``offsets``: each node's clock minus the driver's (:mod:`cluster.clock`),
        so that every time this worker records is on the driver's clock. ``results``: the
        run folder; this worker then writes its records there itself (:mod:`.shards`; in
        its node's spool when it cannot see the folder's ``token`` marker), and a drain
        hands over counts only. Without it, a drain hands over the records."""
        self.worker = worker
        self.replicas = replicas
        self.routes = routes
        self.http = http
        self.max_in_flight = max(1, max_in_flight)
        self._ledger = Ledger(Path(ledger)) if ledger else None
        self._offsets = dict(offsets or {})
        self._node = ray.get_runtime_context().get_node_id()
        self._skew = self._offsets.get(self._node, 0.0)
        """This node's clock minus the driver's: subtracted from every time read here."""
        self._session: Any = None
        self._records: list[dict[str, Any]] = []
        self._batches: list[tuple[int, list[dict[str, Any]]]] = []
        """Batches handed to the driver and not acknowledged yet, by number."""
        self._batch = 0
        self._dropped = 0
        self._stop = asyncio.Event()
        self._in_flight = 0
        self._pending: dict[str, OpRecord] = {}
        """Operations sent and not recorded yet: what would be lost with this worker."""
        self._issued = 0
        self._calls: dict[tuple[str, str, int], Any] = {}
        self._shards = WorkerShards(worker, results, token, run_name) if results else None
        self._tally = Tally()
        self._flusher: asyncio.Task[None] | None = None
        self._flushed_at = time.monotonic()

    async def info(self) -> dict[str, Any]:
        """This worker's pid and node, for the profiler's roles."""
        import os

        shards = self._shards
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "spool": str(shards.folder) if shards is not None and not shards.shared else None,
        }

    async def stop(self) -> None:
        """Stop issuing; operations in flight still finish and are recorded."""
        self._stop.set()

    async def resume(self) -> None:
        """Issue again after :meth:`stop` (a capacity search's next level)."""
        self._stop.clear()

    async def drain(self, ack: int = 0) -> dict[str, Any]:
        """Hand over every batch of finished records not acknowledged yet (``ack``: the
        highest batch number the driver has written), plus live counters and the operations
        still in flight (the driver records them as lost if this worker dies). All records
        finished before ``issued`` was read are in the batches or in ``pending``.

        A worker writing its own shards writes what it holds first, and hands over no
        records: ``written`` (records on disk in all), ``tally`` (what finished since the
        last drain, :class:`~.shards.Tally`) and ``failed`` (why its last write failed).
        All records finished before ``issued`` was read are then on disk or in
        ``pending``, unless ``failed``."""
        answer: dict[str, Any] = {
            "in_flight": self._in_flight,
            "issued": self._issued,
            "dropped": self._dropped,
            "pending": [r.as_dict() for r in self._pending.values()],
        }
        if self._shards is not None:
            self._flush()
            answer.update(
                written=self._shards.written,
                tally=self._tally.take(),
                failed=self._shards.failed,
            )
            return answer
        self._batches = [b for b in self._batches if b[0] > ack]
        if self._records:
            self._batch += 1
            self._batches.append((self._batch, self._records))
            self._records = []
        answer["batches"] = list(self._batches)
        return answer

    def _keep(self, record: dict[str, Any]) -> None:
        """A finished record: held for the next shard (or drain)."""
        self._records.append(record)
        if self._shards is not None:
            self._tally.add(record)
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_often())

    def _flush(self) -> None:
        """Write the records held as one shard of this worker's own; on a failed write they
        stay held."""
        self._flushed_at = time.monotonic()
        if self._shards is not None and self._records and self._shards.flush(self._records):
            self._records = []

    async def _flush_often(self) -> None:
        """Write what finished when :data:`~.shards.FLUSH_S` passed since the last write (a
        drain's included): a crash loses at most that, and drains about every second
        leave one shard a second."""
        while True:
            await asyncio.sleep(max(self._flushed_at + FLUSH_S - time.monotonic(), 0.05))
            if time.monotonic() - self._flushed_at >= FLUSH_S:
                self._flush()

    async def close(self) -> None:
        """Write what is held and close the HTTP session (the run is over)."""
        self._flush()
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _now(self) -> float:
        """The time now on the driver's clock."""
        return time.time() - self._skew

    def _next_id(self) -> str:
        """A new record id; the ledger counts it at once."""
        rid = f"{self.worker}-{self._issued}"
        self._issued += 1
        if self._ledger is not None:
            self._ledger.set(self._issued)
        return rid

    def _new(
        self, stage: str, op: str, project: str, replica: int, planned: float, **more: Any
    ) -> OpRecord:
        """A record of this worker with the next id (``planned``: on the driver's clock)."""
        return OpRecord(
            id=self._next_id(),
            op=op,
            project=project,
            stage=stage,
            worker=self.worker,
            replica=replica,
            planned=planned,
            **more,
        )

    def _drop(self, stage: str, op: str, project: str, planned_unix: float, in_flight: int) -> None:
        """Record an arrival not sent because the cap on operations in flight was reached."""
        self._dropped += 1
        error = (
            f"GeneratorDropped: {in_flight} operations already in flight at "
            f"generator {self.worker} (its cap is {self.max_in_flight})"
        )
        self._keep(self._new(stage, op, project, -1, planned_unix, error=error).as_dict())

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
        unix_sent = self._now()
        planned_unix = unix_sent - (sent - planned)
        lag = max(0.0, sent - planned)
        record = self._new(stage, op, project, replica, planned_unix, sent=unix_sent, lag=lag)
        self._in_flight += 1
        self._pending[record.id] = record
        ref = None
        try:
            if self.http is not None:
                await self._http_call(record, op, project, rng, planned)
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
            started = reply["start"] - self._offsets.get(reply["node"], self._skew)
            record.wait = max(0.0, started - unix_sent)
            record.misses = reply.get("misses") or []
            record.flops = reply.get("flops") or 0.0
            record.node = reply["node"]
            record.pid = reply["pid"]
            record.switched = reply["switched"]
        except TimeoutError:
            record.error = record.error or f"Timeout: no reply in {REPLY_TIMEOUT_S:.0f} s"
            self._cancel(ref)
        except asyncio.CancelledError:
            record.error = f"Interrupted: no reply within {STOP_GRACE_S:.0f} s of the stop"
            self._cancel(ref)
            raise
        except Exception as exc:  # a dead replica, a lost object: the op failed, the run goes on
            record.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            record.duration = time.perf_counter() - planned
            self._in_flight -= 1
            self._pending.pop(record.id, None)
            self._keep(record.as_dict())

    @staticmethod
    def _cancel(ref: Any) -> None:
        """Cancel a replica call given up on, so a replica does not serve stale work (a
        call still queued is dropped; one already running finishes)."""
        if ref is not None:
            with contextlib.suppress(Exception):  # done or gone already
                ray.cancel(ref)

    async def _http_call(
        self, record: OpRecord, op: str, project: str, rng: random.Random, planned: float
    ) -> None:
        """One op against the HTTP stack: a streamed completion (``analyze``, ``switch``)
        or an embeddings request; times to first token (from the actual send and from the
        planned one) and between tokens recorded. A connection that does not open, a reply
        silent for :data:`READ_TIMEOUT_S` and one unfinished after :data:`REPLY_TIMEOUT_S`
        are errors named apart."""
        import aiohttp

        plan = self.http or {}
        read_timeout = float(plan.get("read_timeout_s") or READ_TIMEOUT_S)
        if self._session is None:  # one session: connections are reused, and bounded
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=REPLY_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, sock_read=read_timeout
                ),
                connector=aiohttp.TCPConnector(limit=self.max_in_flight),
            )
        sent = time.perf_counter()
        try:
            await self._http_exchange(record, op, project, rng, plan, sent, planned)
        except aiohttp.ServerTimeoutError as exc:  # connect or read timeout, by its text
            what = str(exc) or type(exc).__name__
            if "connect" in what.lower():
                record.error = f"ConnectTimeout: no connection in {CONNECT_TIMEOUT_S:.0f} s"
            else:
                record.error = f"ReadTimeout: the reply stalled for {read_timeout:g} s"
            record.service = time.perf_counter() - sent
        except TimeoutError:
            record.error = f"Timeout: the reply did not finish in {REPLY_TIMEOUT_S:.0f} s"
            record.service = time.perf_counter() - sent
        except aiohttp.ClientConnectorError as exc:
            record.error = f"ConnectError: {exc}"[:300]

    async def _http_exchange(
        self,
        record: OpRecord,
        op: str,
        project: str,
        rng: random.Random,
        plan: dict[str, Any],
        sent: float,
        planned: float,
    ) -> None:
        from workloads.stack.http import SseReader, StreamTally

        assert self._session is not None
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
            events = SseReader()
            async for line in reply.content:
                for event in events.feed(line):
                    record.error = record.error or tally.add(event, time.perf_counter())
                if record.error is not None:
                    break
            for event in events.end():
                record.error = record.error or tally.add(event, time.perf_counter())
        record.service = time.perf_counter() - sent
        record.stages = {"model": record.service}
        record.ttft, record.itl, record.tokens_out = tally.ttft, tally.itl, tally.tokens
        record.ttft_planned = tally.ttft + (sent - planned) if tally.answered else 0.0
        record.itl_p50, record.itl_p99 = tally.gap_quantiles()
        if record.error is None and not tally.answered:
            record.error = "BadResponse: the stream carried no completion"
        record.ok = record.error is None

    def _cost(self, cpu0: float, wall0: float, issued0: int, dropped0: int = 0) -> dict[str, Any]:
        return {
            "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.perf_counter() - wall0,
            "issued": self._issued - issued0,
            "dropped": self._dropped - dropped0,
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
        origin: float | None = None,
        think: str = "exponential",
    ) -> dict[str, Any]:
        """``users`` concurrent users until ``duration_s`` after ``origin`` (a Unix time,
        the stage's start for every worker; default now); returns this worker's CPU cost.
        Each user starts at its own moment within the first think time (or 0.1 s; at most
        half the stage), so users
        do not move in lockstep, and thinks ``think_time_s`` on average: exponentially
        distributed, or always that long with ``think="constant"``."""
        cpu0, wall0, issued0 = time.process_time(), time.perf_counter(), self._issued
        base = wall0 - (self._now() - origin) if origin is not None else wall0
        deadline = base + duration_s
        ops = OpPicker(mix)
        picker = ProjectPicker(projects, popularity, zipf_s)
        # Starts spread over the first think time, within the first half of the stage, so
        # every user issues at least once however short the stage.
        spread = min(think_time_s if think_time_s > 0 else 0.1, duration_s / 2)

        def pause(rng: random.Random) -> float:
            if think == "constant" or think_time_s <= 0:
                return think_time_s
            return rng.expovariate(1.0 / think_time_s)

        async def user(k: int) -> None:
            rng = random.Random(seed * 1_000_003 + k)
            first = base + rng.uniform(0.0, spread) if users > 1 else base
            if await self._sleep_or_stop(min(first, deadline) - time.perf_counter()):
                return
            while time.perf_counter() < deadline and not self._stop.is_set():
                await self._issue(stage, ops.pick(rng), picker.pick(rng), rng, time.perf_counter())
                if await self._sleep_or_stop(min(pause(rng), deadline - time.perf_counter())):
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
        self,
        stage: str,
        *,
        arrivals: list[tuple[float, str, str]],
        seed: int,
        origin: float | None = None,
    ) -> dict[str, Any]:
        """Fire each ``(at_s, op, project)`` at ``origin + at_s`` (``origin``: a Unix time
        shared by every worker of the stage; default now): an arrival already due fires at
        once, and its lag counts from its planned time. Past :attr:`max_in_flight`
        operations in flight, an arrival is recorded as dropped. Waits for all replies at
        the end."""
        cpu0, wall0, issued0 = time.process_time(), time.perf_counter(), self._issued
        dropped0 = self._dropped
        base = wall0 - (self._now() - origin) if origin is not None else wall0
        rng = random.Random(seed)
        pending: set[asyncio.Task[None]] = set()
        for at_s, op, project in arrivals:
            if await self._sleep_or_stop(base + at_s - time.perf_counter()):
                break
            if len(pending) >= self.max_in_flight:  # sent, or due and about to be
                planned_unix = self._now() - (time.perf_counter() - base - at_s)
                self._drop(stage, op, project, planned_unix, len(pending))
                continue
            # Latency counts from the planned arrival: a late send is lag, not hidden.
            task = asyncio.create_task(self._issue(stage, op, project, rng, base + at_s))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await self._finish(list(pending))
        return self._cost(cpu0, wall0, issued0, dropped0)
