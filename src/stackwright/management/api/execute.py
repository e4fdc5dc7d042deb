"""Running a command: authenticate, validate, execute in one transaction, shape the answer.

The HTTP layer and the job workers both come through here, so a command behaves the same
whether it runs in the request or later as an async job.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc


from ..context import Context, Principal
from ..errors import ApiError, AuthenticationError, LoginFailed, MethodNotAllowed
from ..persistence.db import is_deadlock
from ..persistence.models import User
from ..services.jobs import Begun
from ..services.system_jobs import SYSTEM_JOBS
from . import params as paramlib
from . import signing
from .authorize import refused
from .registry import REGISTRY, ListResult, Success
from .views import restricted
from .render import encode

if TYPE_CHECKING:
    from collections.abc import Mapping
    from sqlalchemy.orm import Session
    from ..api.registry import Command
    from ..engine import Engine, KeyEntry
    from ..persistence.models import AsyncJob

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "unable to verify user credentials and/or request signature"
# Runs of a request whose transaction a deadlock rolled back.
DEADLOCK_TRIES = 3


def response_key(command_name: str) -> str:
    cmd = REGISTRY.get(command_name)
    if cmd is None:
        return "errorresponse"
    return cmd.key


def shape(cmd: Command, out: object, admin: bool = True) -> dict[str, Any]:
    """The body under `<command>response` for a handler's return value; without `admin`, as
    a caller who is not a root admin sees it (api.views)."""
    if isinstance(out, ListResult):
        if out.count == 0:
            return {}
        body = {"count": out.count}
        if out.items:
            body[cmd.response] = out.items if admin else restricted(cmd.response, out.items)
        return body
    if cmd.response is None and isinstance(out, dict):
        return out
    if isinstance(out, Success) or out is True or out is None:
        body = {"success": True}
        if isinstance(out, Success) and out.displaytext:
            body["displaytext"] = out.displaytext
        return body
    return {cmd.response: out if admin else restricted(cmd.response, out)}


CREDENTIALS = frozenset({"apikey", "signature", "signatureversion", "expires", "sessionkey"})


def credentials(raw: Mapping[str, str]) -> dict[str, str]:
    """The credential parameters of a request, by lower-case name: their names are matched in
    any case, and of two spellings of one name the first in the request counts."""
    found: dict[str, str] = {}
    for k, v in raw.items():
        name = k.lower()
        if name in CREDENTIALS and name not in found:
            found[name] = v
    return found


def check_signed(engine: Engine, entry: KeyEntry, raw: Mapping[str, str], creds: Mapping[str, str],
                 method: str) -> Principal:
    """The Principal of a request (`creds`: its credentials()) signed with the key `entry`
    describes, or AuthenticationError."""
    api_key = creds["apikey"]
    signature = creds.get("signature")
    version = creds.get("signatureversion")
    expires = creds.get("expires")
    enforce = engine.settings.typed("enforce.post.requests.and.timestamps")
    if enforce and (method != "POST" or version != "3"):
        raise AuthenticationError(BAD_CREDENTIALS)
    if version == "3" or enforce:
        if expires is None:
            raise AuthenticationError(BAD_CREDENTIALS)
        reason = signing.expired(expires, max_ahead=signing.MAX_AHEAD if enforce else None)
        if reason:
            log.info("refused request with apiKey %s...: %s", api_key[:6], reason)
            raise AuthenticationError(BAD_CREDENTIALS)
    if not signing.verify(raw, entry.secret, signature):
        raise AuthenticationError(BAD_CREDENTIALS)
    if not entry.enabled:
        raise AuthenticationError(BAD_CREDENTIALS)
    # The key cache knows enough to authorise; the User row is loaded only if a command needs it.
    return Principal(entry.user_id, entry.account_id, entry.root_admin, entry.role_id)


def authenticate(engine: Engine, session: Session, raw: Mapping[str, str], method: str, cookies: dict[str, str]) -> Principal:
    """The calling User, or AuthenticationError (401) with CloudStack's text."""
    creds = credentials(raw)
    api_key = creds.get("apikey")
    if api_key is not None:
        entry = engine.keys.lookup(session, api_key)
        if entry is None:
            raise AuthenticationError(BAD_CREDENTIALS)
        return check_signed(engine, entry, raw, creds, method)
    session_id = cookies.get("JSESSIONID")
    if not session_id:
        raise AuthenticationError(BAD_CREDENTIALS)
    # The session key must come as a parameter, which a cross-site page cannot read or send;
    # a `sessionkey` cookie, which the browser adds to any request, must then agree with it.
    session_key = creds.get("sessionkey")
    if session_key is None or cookies.get("sessionkey", session_key) != session_key:
        raise AuthenticationError("unable to verify user credentials")
    user = engine.sessions_user(session, session_id, session_key)
    if user is None:
        raise AuthenticationError("unable to verify user credentials")
    if user.removed is not None or user.state != "enabled" or user.account.state != "enabled":
        raise AuthenticationError(BAD_CREDENTIALS)
    return Principal.of(user)


def cached_answer(engine: Engine, raw: Mapping[str, str], method: str) -> tuple[str, Any, int] | None:
    """(response_key, body, status) for a cacheable command whose answer is stored and
    whose caller's key is in the key cache, checked without the database; else None, and
    the request takes the full path."""
    cmd = REGISTRY.get(raw.get("command", ""))
    cache = engine.responses
    if cmd is None or not cmd.cacheable or not cache.enabled:
        return None
    creds = credentials(raw)
    api_key = creds.get("apikey")
    entry = engine.keys.fresh(api_key) if api_key is not None else None
    if entry is None:
        return None
    try:
        user = check_signed(engine, entry, raw, creds, method)
        policy = engine.roles.fresh(user.role_id)
        if policy is None or not policy.allows(cmd.name):
            return None
        data = cache.get(cache.token(user, cmd, raw))
        if data is None:
            return None
        engine.throttle.check(user)
    except ApiError as e:
        from .render import error_body

        return cmd.key, error_body(cmd.key, e), e.errorcode
    return cmd.key, data, 200


def execute(engine: Engine, raw: Mapping[str, str], method: str = "GET", cookies: dict[str, str] | None = None,
            request_id: str | None = None) -> tuple[str, Any, int, dict[str, str]]:
    """Run one API request; returns (response_key, body, http_status, cookies_to_set).

    `body` is the response as a dict, or as encoded JSON bytes for cacheable commands.
    """
    command_name = raw.get("command", "")
    cmd = REGISTRY.get(command_name)
    key = cmd.key if cmd else "errorresponse"
    try:
        if cmd is not None and cmd.login_free:
            if cmd.name == "login" and method != "POST":
                raise MethodNotAllowed("Please use HTTP POST to authenticate using this API")
            failed = None
            with engine.db.transaction() as session:
                ctx = Context(engine, session, None, cmd.name, request_id)
                ctx.cookies_in = cookies or {}
                p = paramlib.parse(cmd.name, cmd.params, raw, ctx)
                try:
                    out = cmd.handler(ctx, p)
                except LoginFailed as e:
                    failed = e      # the wrong password is counted: commit, then refuse
            if failed is not None:
                raise failed
            return key, {key: shape(cmd, out)}, 200, ctx.cookies

        def attempt() -> tuple[str, Any, int, dict[str, str]]:
            readonly = (cmd.readonly if cmd else True) and not (cmd and cmd.async_job)
            with engine.db.transaction(readonly=readonly) as session:
                user = authenticate(engine, session, raw, method, cookies or {})
                engine.throttle.check(user, None if readonly else session)
                if cmd is None:
                    raise AuthenticationError(BAD_CREDENTIALS)
                ctx = Context(engine, session, user, cmd.name, request_id)
                if not engine.roles.allows(session, user, cmd.name):
                    raise refused(cmd.name, ctx.account.name if ctx.account else None)
                cache = engine.responses if cmd.cacheable and engine.responses.enabled else None
                if cache is not None:
                    token, generation = cache.token(user, cmd, raw), cache.generation
                    data = cache.get(token)
                    if data is not None:
                        return key, data, 200, {}
                p = paramlib.parse(cmd.name, cmd.params, raw, ctx)
                if cmd.async_job:
                    if cmd.admit is not None:
                        cmd.admit(ctx, p)
                    instance_uuid = cmd.prepare(ctx, p) if cmd.prepare else getattr(getattr(p, "id", None), "uuid", None)
                    job = ctx.jobs.create(cmd, raw, instance_uuid=instance_uuid)
                    body = {"jobid": job.uuid}
                    if cmd.prepare is not None:
                        body = {"id": instance_uuid, "jobid": job.uuid}
                    job_uuid = job.uuid
                    ctx.after_commit(lambda: engine.jobs.submit(job_uuid))
                else:
                    body = shape(cmd, cmd.handler(ctx, p), ctx.is_root_admin)
            ctx.run_after_commit()
            if cache is not None:
                data = encode({key: body})
                cache.put(token, generation, data)
                return key, data, 200, ctx.cookies
            return key, {key: body}, 200, ctx.cookies

        # MariaDB (and Galera's certification) may pick this transaction as a deadlock's victim:
        # it was rolled back whole, so the request runs again from the start.
        for tries in range(1, DEADLOCK_TRIES + 1):
            try:
                return attempt()
            except sa_exc.OperationalError as e:
                if tries == DEADLOCK_TRIES or not is_deadlock(e):
                    raise
                log.info("request %s (%s) chosen as a deadlock victim; running it again", request_id, command_name)
        raise AssertionError("unreachable")
    except ApiError as e:
        from .render import error_body

        return key, error_body(key, e), e.errorcode, {}


def job_result(cmd: Command, out: object, admin: bool = True) -> dict[str, Any]:
    """The jobresult dict of a job's command output."""
    body = shape(cmd, out, admin)
    if cmd.response and cmd.response in body and isinstance(body[cmd.response], list):
        # jobresult carries exactly one object
        body = {cmd.response: body[cmd.response][0]}
    return body


class ApiJobs:
    """The job executor's way to the API commands (services.jobs.JobCommands): a job runs its
    command's handler, which returns a result or a generator of steps."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def begin(self, session: Session, job: AsyncJob) -> Begun:
        ctx = self.context(session, job)
        cmd = REGISTRY.get(job.command)
        if cmd is None:
            return Begun(SYSTEM_JOBS[job.command](ctx, **job.params), lambda out: out or {}, ctx)
        p = paramlib.parse(cmd.name, cmd.params, dict(job.params), ctx)
        return Begun(cmd.handler(ctx, p), functools.partial(job_result, cmd, admin=ctx.is_root_admin), ctx)

    def context(self, session: Session, job: AsyncJob) -> Context:
        return Context(self.engine, session, session.get(User, job.user_id), job.command, job=job)

    def after_commit(self, ctx: Context) -> None:
        ctx.run_after_commit()
