"""Starlette under uvicorn, one inference per request: the shape of the original web app.

    PEERS_MODEL=malaria PEERS_ORT_THREADS=2 uvicorn starlette_server:app --port 8000

POST /screen with the image file as the raw body; the answer is {"probabilities": [...]} in
the model's class order. The blocking work (decode, preprocess, inference) runs in Starlette's
thread pool, off the event loop.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from common import Screener

screener = Screener.from_env()


async def screen(request: Request) -> JSONResponse:
    body = await request.body()
    [result] = await run_in_threadpool(screener.screen, [body])
    return JSONResponse({"probabilities": result})


app = Starlette(routes=[Route("/screen", screen, methods=["POST"])])
