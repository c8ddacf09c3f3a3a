"""``eddy dashboard``: a live web page per pipeline, drawn from the history workers keep in Redis.

Every worker appends one point per pipeline per second to a bounded Redis list (the last hour): events/s, consumer
lag, p99 latency, prequential scores, drift alarms, the model version and the router's expert shares. The dashboard
only reads that history, so it can start, stop and restart at any time and still shows the last hour. The page and
its script ship in the package (``pipelines/static/``), nothing comes from a CDN.

It binds to 127.0.0.1. Listening on any other address needs a token (``EDDY_DASHBOARD_TOKEN``); requests then must
carry it (``Authorization: Bearer <token>`` or ``?token=<token>``) or get 401.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from connectors.state import StateStore, StateUnavailableError

log = logging.getLogger(__name__)
STATIC = importlib.resources.files("pipelines") / "static"
ASSETS = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class DashboardError(ValueError):
    """A dashboard that must not start as configured; the message says how to fix it."""


def check_binding(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token.

    >>> check_binding("127.0.0.1", None)
    >>> check_binding("0.0.0.0", None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipelines.dashboard.DashboardError: listening on 0.0.0.0 exposes the dashboard beyond this machine: set EDDY_...
    """
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise DashboardError(
            f"listening on {host} exposes the dashboard beyond this machine: set EDDY_DASHBOARD_TOKEN "
            "(clients then send it as 'Authorization: Bearer <token>'), or keep --host 127.0.0.1"
        )


def build_app(store: StateStore, token: str | None) -> web.Application:
    """The dashboard's routes: the page, its assets, the pipeline list and each pipeline's history."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            given = given or request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="missing or wrong dashboard token")
        return await handler(request)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "dashboard.html").read_text(), content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(text=(STATIC / name).read_text(), content_type=ASSETS[name])

    async def pipelines(_: web.Request) -> web.Response:
        names = await _read(store.series_names)
        return web.json_response({"pipelines": names})

    async def series(request: web.Request) -> web.Response:
        name = request.match_info["pipeline"]
        try:
            limit = int(request.query.get("limit", "3600"))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        if limit < 1:
            raise web.HTTPBadRequest(text="limit must be >= 1")
        try:
            points = await _read(lambda: store.points(name, limit))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"pipeline": name, "points": points})

    app = web.Application(middlewares=[require_token])
    app.add_routes(
        [
            web.get("/", page),
            web.get("/static/{name}", asset),
            web.get("/api/pipelines", pipelines),
            web.get("/api/series/{pipeline}", series),
        ]
    )
    return app


async def _read(read: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(read)
    except StateUnavailableError as exc:
        raise web.HTTPServiceUnavailable(text=f"state store unreachable: {exc}") from None


async def serve_dashboard(state_url: str, host: str, port: int, token: str | None, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    check_binding(host, token)
    store = StateStore(state_url, retry_timeout_s=0)
    runner = web.AppRunner(build_app(store, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        store.close()


def dashboard_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the dashboard."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
