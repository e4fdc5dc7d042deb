"""The HTTP side of the API: one endpoint, /client/api, GET and POST.

Requests are parsed here and executed on a bounded thread pool (database work is blocking);
one log line per request records the command, caller, duration, status and job id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

from aiohttp import web

from .execute import cached_answer, execute, response_key
from .render import encode

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)
access_log = logging.getLogger("stackwright.management.access")

ENGINE = web.AppKey("engine", object)
POOL = web.AppKey("pool", concurrent.futures.ThreadPoolExecutor)
HEALTH_POOL = web.AppKey("health_pool", concurrent.futures.ThreadPoolExecutor)

# The balancer's health check: no key, no command, one small query. Apache CloudStack has no
# such endpoint (balancers there fetch the UI page, which says nothing of the database).
HEALTH_PATH = "/client/api/health"
# A database that does not answer within this many seconds counts as unreachable.
HEALTH_TIMEOUT = 5.0

INTERNAL_ERROR = "Internal error executing command, please contact your system administrator (request id %s)"


async def _params(request: web.Request) -> dict[str, str]:
    raw: dict[str, str] = {}
    for k, v in request.query.items():
        raw.setdefault(k, v)
    if request.method == "POST" and request.can_read_body:
        try:
            form = await request.post()
        except (ValueError, LookupError, AssertionError):
            # Not UTF-8, an unknown charset, a broken multipart body: read it as a servlet
            # container would, undecodable bytes replaced, instead of failing the request.
            body = (await request.read()).decode("utf-8", "replace")
            form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        for k, v in form.items():
            if isinstance(v, str):
                raw[k] = v
    return raw


def _json(body: bytes | dict[str, Any], status: int) -> web.Response:
    return web.Response(
        body=body if isinstance(body, bytes) else encode(body),
        status=status,
        content_type="application/json",
        charset="UTF-8",
    )


async def api_handler(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    started = time.monotonic()
    # Twelve random hex digits, as the first twelve of a random UUID's.
    request_id = os.urandom(6).hex()
    try:
        raw = await _params(request)
    except web.HTTPException as refused:
        # A body over the size limit, too many form fields: refused before any command runs,
        # in CloudStack's envelope.
        access_log.info("%s %s - status=%d refused: %s", request_id, request.method, refused.status, refused.text)
        return _json({"errorresponse": {"uuidList": [], "errorcode": refused.status, "cserrorcode": 9999,
                                        "errortext": refused.text or refused.reason}}, refused.status)
    command = raw.get("command", "")
    cookies = dict(request.cookies)
    loop = asyncio.get_running_loop()
    try:
        # A stored answer needs no database work: it is served here, without the thread hop.
        answer = cached_answer(engine, raw, request.method)
        if answer is not None:
            (key, body, status), set_cookies = answer, {}
        else:
            key, body, status, set_cookies = await loop.run_in_executor(
                request.app[POOL], execute, engine, raw, request.method, cookies, request_id
            )
    except Exception:
        log.exception("request %s (%s) failed with an internal error", request_id, command)
        key = response_key(command)
        body = {key: {"uuidList": [], "errorcode": 530, "cserrorcode": 4250,
                      "errortext": INTERNAL_ERROR % request_id}}
        status, set_cookies = 530, {}
    response = _json(body, status)
    for name, value in set_cookies.items():
        response.set_cookie(name, value, httponly=True, path="/client")
    inner = body.get(key, {}) if isinstance(body, dict) else {}
    access_log.info(
        "%s %s %s status=%d %.1fms%s%s",
        request_id, request.method, command or "-", status,
        (time.monotonic() - started) * 1000,
        f" job={inner['jobid']}" if isinstance(inner, dict) and "jobid" in inner else "",
        f" error={inner.get('errortext')!r}" if status != 200 and isinstance(inner, dict) else "",
    )
    return response


async def health_handler(request: web.Request) -> web.Response:
    """200 while this engine reaches its database and its management-server record is Up,
    503 otherwise; the body says which, without names, addresses or secrets."""
    engine = request.app[ENGINE]
    loop = asyncio.get_running_loop()
    try:
        healthy, report = await asyncio.wait_for(
            loop.run_in_executor(request.app[HEALTH_POOL], engine.health), HEALTH_TIMEOUT)
    except asyncio.TimeoutError:
        healthy, report = False, {"status": "DOWN", "database": "unreachable"}
    except Exception:
        log.exception("health check failed with an internal error")
        healthy, report = False, {"status": "DOWN"}
    if not healthy:
        access_log.info("- %s health status=503 %s", request.method, report)
    return _json({"health": report}, 200 if healthy else 503)


async def root_handler(request: web.Request) -> NoReturn:
    raise web.HTTPFound("/client/api")


def make_app(engine: Engine, workers: int = 8) -> web.Application:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[ENGINE] = engine
    app[POOL] = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api")
    # One thread of its own: a check is answered while every API worker is busy.
    app[HEALTH_POOL] = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    app.router.add_route("GET", HEALTH_PATH, health_handler)
    app.router.add_route("HEAD", HEALTH_PATH, health_handler)
    app.router.add_route("GET", "/client/api", api_handler)
    app.router.add_route("POST", "/client/api", api_handler)
    app.router.add_route("GET", "/client/api/", api_handler)
    app.router.add_route("POST", "/client/api/", api_handler)

    async def close_pool(app: web.Application) -> None:
        app[POOL].shutdown(wait=True, cancel_futures=True)
        app[HEALTH_POOL].shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(close_pool)
    return app
