"""Test-only: a small OpenAI-style server that misbehaves on purpose, then dies.

``python tests/oddserver.py PORT DIE_AFTER [stall]`` listens on 127.0.0.1:PORT. It lists
one model; of its completions, one in three answers HTTP 500 (the model refused), one in
three streams lines that are not JSON, and one in three streams three tokens properly.
After DIE_AFTER completions it exits, as a crashing server would.

With ``stall``, its completions go round four other ways: one token then a silence of
:data:`STALL_S` (a stalled stream), one event written over two ``data:`` lines then a
token, one token then an error event (``out of memory``), and three tokens 50 ms apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aiohttp import web

served = 0
STALL_S = 6.0


def _token(text: str) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'text': text}]})}\n\n".encode()


async def stalls(request: web.Request) -> web.StreamResponse:
    global served
    served += 1
    await request.json()
    reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await reply.prepare(request)
    way = served % 4
    if way == 0:
        await reply.write(_token("a"))
        await asyncio.sleep(STALL_S)
    elif way == 1:
        await reply.write(b'data: {"choices": [{"index": 0,\ndata: "text": "ml"}]}\n\n')
        await reply.write(_token("b"))
    elif way == 2:
        await reply.write(_token("a"))
        await reply.write(b'event: error\ndata: {"message": "out of memory"}\n\n')
    else:
        for text in ("a", "b", "c"):
            await reply.write(_token(text))
            await asyncio.sleep(0.05)
    await reply.write(b"data: [DONE]\n\n")
    await reply.write_eof()
    return reply


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
    stall = len(sys.argv) > 3 and sys.argv[3] == "stall"
    app.router.add_post("/v1/completions", stalls if stall else completions)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
