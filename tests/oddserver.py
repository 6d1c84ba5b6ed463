"""Test-only: a small OpenAI-style server that misbehaves on purpose, then dies.

``python tests/oddserver.py PORT DIE_AFTER`` listens on 127.0.0.1:PORT. It lists one model;
of its completions, one in three answers HTTP 500 (the model refused), one in three streams
lines that are not JSON, and one in three streams three tokens properly. After DIE_AFTER
completions it exits, as a crashing server would.
"""

from __future__ import annotations

import json
import os
import sys

from aiohttp import web

served = 0


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "odd-model"}]})


async def completions(request: web.Request) -> web.StreamResponse:
    global served
    served += 1
    if served > int(sys.argv[2]):
        os._exit(3)
    body = await request.json()
    if served % 3 == 0:
        return web.Response(status=500, text=f"boom: model {body.get('model')} refused")
    reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await reply.prepare(request)
    if served % 3 == 1:
        await reply.write(b"data: this is not json\n\n")
    else:
        for token in ("a", "b", "c"):
            chunk = {"choices": [{"index": 0, "text": token}]}
            await reply.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await reply.write(b"data: [DONE]\n\n")
    await reply.write_eof()
    return reply


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
