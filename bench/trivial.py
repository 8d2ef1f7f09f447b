"""`python -m bench.trivial --port P`: the cheapest Starlette endpoint on uvicorn, the ceiling for the webhook."""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = Starlette(routes=[Route("/", ok, methods=["GET", "POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False, loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
