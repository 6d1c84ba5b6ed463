"""Test-only: a small OpenAI-style server that serves one request at a time, so it queues.

``python tests/queueserver.py PORT SECONDS_PER_TOKEN PREFILL_S`` listens on
127.0.0.1:PORT. It lists one model. Each completion waits for a lock (the requests ahead of
it), then takes PREFILL_S before its first token and SECONDS_PER_TOKEN for each token, and
streams ``max_tokens`` tokens (16 when the request does not say) as OpenAI-style chunks,
with the usage in its last event. A request alone costs PREFILL_S + max_tokens x
SECONDS_PER_TOKEN; requests sent faster than that wait for one another inside the server,
where a client sees the wait only as a late first token.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

MODEL = "queue-model"
lock = asyncio.Lock()


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL}]})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _event(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    tokens = max(int(body.get("max_tokens") or 16), 1)
    per_token, prefill = float(sys.argv[2]), float(sys.argv[3])
    reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await reply.prepare(request)  # headers at once: the wait shows only in the first token
    async with lock:
        await asyncio.sleep(prefill)
        for k in range(tokens):
            await asyncio.sleep(per_token)
            finish = "length" if k == tokens - 1 else None
            choice = {"index": 0, "text": f" t{k}", "finish_reason": finish}
            await reply.write(_event({"model": MODEL, "choices": [choice]}))
    usage = {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}
    await reply.write(_event({"model": MODEL, "choices": [], "usage": usage}))
    await reply.write(b"data: [DONE]\n\n")
    await reply.write_eof()
    return reply


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
