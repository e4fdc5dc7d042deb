"""Async jobs: rows in the database, run by a bounded pool of worker threads.

A job is either one transaction (its changes and its final status commit together) or a
sequence of recorded steps (services/steps.py): database steps, each one transaction that
also records the outcomes so far and the next step, and agent steps, one call each made
outside any transaction. A kill of the engine at any point leaves a job pending at its
recorded step; the next run replays the recorded outcomes, settles an agent step whose
outcome was not recorded by asking the host, and goes on from there. Services describe
steps; only the executor commits.

A job that meets an unavailable database stays pending at its recorded step: it is tried
again every few seconds until the database is back, without a restart of the engine.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import ApiError, DatabaseUnavailable, InvalidParameterValue, PermissionDenied, ResourceUnavailable
from .gateway import AgentAbsent, CallLost
from ..persistence.models import AsyncJob, utcnow
from .steps import AgentStep, DbStep, Result, Step, Steps, WaitStep, record_error, record_value, replay

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stackwright.protocol import messages as m

    from ..context import Context

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3
# Seconds before a job that met an unavailable database is tried again.
RETRY_SECONDS = 2.0


class JobService:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.session = ctx.session

    def create(self, command: str, raw_params: Mapping[str, str], instance_type: str | None = None, instance_uuid: str | None = None) -> AsyncJob:
        params = {k: v for k, v in raw_params.items()
                  if k.lower() not in ("apikey", "signature", "signatureversion", "expires", "sessionkey")}
        job = AsyncJob(
            command=command.name,
            cmd_class=command.cmd_class,
            params=params,
            user_id=self.ctx.user.id,
            account_id=self.ctx.user.account_id,
            instance_type=instance_type or command.instance_type,
            instance_uuid=instance_uuid,
            executing_msid=self.ctx.engine.cluster.me.msid,
        )
        self.session.add(job)
        self.session.flush()
        return job

    def create_system(self, kind: str, params: dict, instance_type: str, instance_uuid: str) -> AsyncJob:
        """A job the engine gives itself on behalf of the caller, run once this transaction commits."""
        job = AsyncJob(command=kind, cmd_class=f"com.cloud.{kind}", params=params, user_id=self.ctx.user.id,
                       account_id=self.ctx.user.account_id, instance_type=instance_type,
                       instance_uuid=instance_uuid, executing_msid=self.ctx.engine.cluster.me.msid)
        self.session.add(job)
        self.session.flush()
        job_uuid, jobs = job.uuid, self.ctx.engine.jobs
        self.ctx.after_commit(lambda: jobs.submit(job_uuid))
        return job

    def get_visible(self, job_uuid: str) -> AsyncJob:
        job = self.session.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one_or_none()
        if job is None:
            raise InvalidParameterValue(f"Unable to find a job with id {job_uuid}")
        if not self.ctx.is_root_admin and job.account_id != self.ctx.user.account_id:
            raise PermissionDenied(f"Account {self.ctx.account.name} does not have permission to access job {job_uuid}")
        return job


@dataclass
class Begun:
    """A job's command as started in the job's first transaction: a finished `output`, or a
    generator of steps; `shape` turns the output (or the generator's return value) into the
    job's result."""

    output: Any
    shape: Callable[[Any], dict]
    context: Any = None         # the context of the first transaction, for its after-commit work


class JobCommands(Protocol):
    """What the executor needs from the layer that knows the commands (injected)."""

    def begin(self, session: Session, job: AsyncJob) -> Begun:
        """Parse the job's parameters and run its command's handler in `session`."""

    def context(self, session: Session, job: AsyncJob) -> Any:
        """A context for one step's transaction, acting as the job's caller."""

    def after_commit(self, context: Any) -> None:
        """Run what the context deferred until its transaction committed."""


class Waiter:
    """What a WaitStep may use: the agent gateway, read-only looks at the database, sleep."""

    def __init__(self, executor: JobExecutor, job_uuid: str):
        self._executor = executor
        self._job_uuid = job_uuid
        self.agents = executor.engine.gateway

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A context on a short read-only transaction (never held across a wait)."""
        with self._executor.engine.db.transaction(readonly=True) as s:
            job = _job(s, self._job_uuid)
            yield self._executor.commands.context(s, job)

    def sleep(self, seconds: float) -> None:
        self._executor.stopping.wait(max(0.0, seconds))


class _Failed(Exception):
    """A step's failure, carried out of the transaction it rolled back."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class JobExecutor:
    """Runs pending jobs on `workers` threads; picks up jobs left pending by a restart.

    `commands` (JobCommands) starts a job's command; the composition root injects it."""

    def __init__(self, engine: Any, commands: JobCommands, workers: int = 4):
        self.engine = engine
        self.commands = commands
        self.workers = workers
        self._queue: queue.Queue = queue.Queue()
        # Job commands run apart, on threads of their own (`lane`): command -> its queue, and
        # each queue with its thread count (the general queue first).
        self._lane_of: dict[str, queue.Queue] = {}
        self._queues: list[tuple[queue.Queue, int, str]] = [(self._queue, workers, "job-worker")]
        self._threads: list[tuple[threading.Thread, queue.Queue]] = []
        self.stopping = threading.Event()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        # Jobs waiting for the database to come back, resubmitted by the retry thread.
        self._deferred: set[str] = set()
        self._retry_thread: threading.Thread | None = None

    def lane(self, name: str, workers: int, commands: Collection[str]) -> None:
        """Run the jobs of `commands` on `workers` threads of their own (before `start`): at most
        that many run at once, and their waits never hold a general worker (HA work, ha.workers)."""
        lane: queue.Queue = queue.Queue()
        self._queues.append((lane, workers, name))
        self._lane_of.update(dict.fromkeys(commands, lane))

    def start(self) -> None:
        for lane, workers, name in self._queues:
            for i in range(workers):
                t = threading.Thread(target=self._work, args=(lane,), name=f"{name}-{i}", daemon=True)
                t.start()
                self._threads.append((t, lane))
        self._retry_thread = threading.Thread(target=self._retry_deferred, name="job-retry", daemon=True)
        self._retry_thread.start()
        # Its own, and those of servers that are not Up; a live peer's are the peer's.
        pending = self.engine.cluster.pending_jobs()
        if pending:
            log.info("resuming %d pending async job(s) after restart", len(pending))
        self.resubmit(pending)

    def submit(self, job_uuid: str, command: str | None = None) -> None:
        """Queue a job; `command` (the job's) picks its lane, the general queue without one."""
        self._lane_of.get(command, self._queue).put(job_uuid)

    def resubmit(self, job_uuids: Collection[str]) -> None:
        """Queue jobs known by uuid only (pending after a restart, taken over, deferred), each in
        the lane of its command."""
        if not job_uuids:
            return
        commands: dict[str, str] = {}
        if self._lane_of:
            with self.engine.db.transaction(readonly=True) as s:
                commands = dict(s.execute(select(AsyncJob.uuid, AsyncJob.command).where(
                    AsyncJob.uuid.in_(list(job_uuids)))).all())
        for job_uuid in job_uuids:
            self.submit(job_uuid, commands.get(job_uuid))

    def defer(self, job_uuid: str) -> None:
        """Run the job again once RETRY_SECONDS have passed (the database was away)."""
        with self._lock:
            self._deferred.add(job_uuid)

    def _retry_deferred(self) -> None:
        while not self.stopping.wait(RETRY_SECONDS):
            with self._lock:
                due, self._deferred = self._deferred, set()
            try:
                self.resubmit(sorted(due))
            except DatabaseUnavailable:
                with self._lock:
                    self._deferred |= due

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; wait (bounded) for running ones to finish."""
        self.stopping.set()
        for _thread, lane in self._threads:
            lane.put(None)
        deadline = time.monotonic() + timeout
        for t in [t for t, _lane in self._threads] + ([self._retry_thread] if self._retry_thread else []):
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> set[str]:
        """The uuids of the jobs the workers run now."""
        with self._lock:
            return set(self._running)

    def _mine(self, job: AsyncJob | None) -> bool:
        """Whether `job` (locked) is still pending and run by this server: a peer that found this
        one Down may have taken it over meanwhile, and goes on with it from its recorded step."""
        if job is None or job.status != PENDING:
            return False
        if job.executing_msid not in (None, self.engine.cluster.me.msid):
            log.warning("job %s is run by management server %d now; this one stops", job.uuid, job.executing_msid)
            return False
        return True

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def _work(self, lane: queue.Queue) -> None:
        while not self.stopping.is_set():
            job_uuid = lane.get()
            if job_uuid is None:
                return
            with self._lock:
                if job_uuid in self._running:
                    continue
                self._running.add(job_uuid)
            try:
                self.run(job_uuid)
            except Exception:  # a worker must survive anything a job does
                log.exception("async job %s crashed its worker", job_uuid)
            finally:
                with self._lock:
                    self._running.discard(job_uuid)

    # --- one job ------------------------------------------------------------------------

    def run(self, job_uuid: str) -> None:
        started = time.monotonic()
        try:
            command = self._run(job_uuid)
            if command is not None:
                log.info("job %s %s finished in %.3fs", job_uuid, command, time.monotonic() - started)
        except DatabaseUnavailable as e:
            # Nothing after the last recorded step was committed (or, if a commit did reach the
            # database, the record says so and the next run goes on from there): try again later.
            log.warning("job %s waits for the database: %s", job_uuid, e.text)
            self.defer(job_uuid)
        except Exception as e:
            self._fail(job_uuid, e)

    def _run(self, job_uuid: str) -> str | None:
        """Run (or go on with) one job; the command name once it is final, None when it was not pending."""
        db = self.engine.db
        with db.transaction() as s:
            job = _job(s, job_uuid, lock=True)
            if job is None or job.status != PENDING or not self.engine.cluster.may_run(s, job):
                return None
            command = job.command
            job.attempts = (job.attempts or 0) + 1
            resumed = job.attempts > 1
            begun = self.commands.begin(s, job)
            if inspect.isgenerator(begun.output):
                cursor = _Cursor(begun.output, list(job.step_results or ()))
                step = cursor.start()
                result = _shaped(begun, cursor.value, begun.context) if cursor.done else None
                job.step = cursor.index
            else:
                cursor, result = None, begun.shape(begun.output)
            if result is not None:
                _finish(job, result)
        if begun.context is not None:
            self.commands.after_commit(begun.context)
        if cursor is None or cursor.done:
            return command
        pending: list[dict] = []        # outcomes not recorded yet
        # After a restart, the first step not recorded may have been carried out if it is an agent's.
        settle = resumed
        try:
            while True:
                if isinstance(step, DbStep):
                    step = self._db_step(job_uuid, step, cursor, pending, begun)
                    if step is None:
                        return command
                    settle = False
                    continue
                if isinstance(step, AgentStep):
                    ok, value = self._agent_step(step, settle)
                else:
                    ok, value = self._wait_step(job_uuid, step)
                settle = False
                step = self._outcome(job_uuid, cursor, pending, begun, ok, value)
                if step is None:
                    return command
        finally:
            cursor.close()

    def _outcome(self, job_uuid: str, cursor: _Cursor, pending: list[dict], begun: Begun, ok: bool,
                 value: Any) -> Step | None:
        """Feed the outcome of a step that ran outside a transaction (an agent's answer, a wait's
        result, a database step's failure) to the job; the next step, or None when the job is
        final. The outcome waits in `pending` for the next database step to record it, unless
        the job ends here or goes on with another step outside a transaction: then it is
        recorded now, in a transaction of its own."""
        pending.append(record_value(value) if ok else record_error(value))
        try:
            following = cursor.send(ok, value)
        except DatabaseUnavailable:
            raise
        except Exception as e:
            self._record(job_uuid, cursor, pending, begun, failure=e)
            return None
        if cursor.done or not isinstance(following, DbStep):
            self._record(job_uuid, cursor, pending, begun)
            pending.clear()
        return None if cursor.done else following

    def _db_step(self, job_uuid: str, step: DbStep, cursor: _Cursor, pending: list[dict],
                 begun: Begun) -> Step | None:
        """Run a database step in one transaction with the recording of what came before and of
        the next step; the next step, or None when the job is final."""
        try:
            with self.engine.db.transaction() as s:
                job = _job(s, job_uuid, lock=True)
                if not self._mine(job):
                    return None
                ctx = self.commands.context(s, job)
                try:
                    value = step.fn(ctx, *step.args)
                    s.flush()
                except DatabaseUnavailable:
                    raise
                except Exception as e:
                    raise _Failed(e) from e
                recorded = pending + [record_value(value)]
                try:
                    following = cursor.send(True, value)
                except DatabaseUnavailable:
                    raise
                except Exception as e:
                    # The job ends here: the step's changes, the record and the failure commit together.
                    _record_into(job, cursor, recorded)
                    _fail_into(job, e)
                    following = None
                else:
                    _record_into(job, cursor, recorded)
                    if cursor.done:
                        _end(job, begun, cursor.value, ctx)
                        following = None
            pending.clear()     # recorded with the step
            self.commands.after_commit(ctx)
            return following
        except _Failed as failed:
            _log_step_failure(job_uuid, step, failed.error)
            return self._outcome(job_uuid, cursor, pending, begun, False, failed.error)

    def _agent_step(self, step: AgentStep, settle: bool) -> tuple[bool, Any]:
        """One agent step: its answer, or its failure. With `settle` (the step may have been
        carried out already: sent before the engine that ran the job stopped), the host is asked
        first, through the step's settle function, and the request is sent only if it was not."""
        gateway = self.engine.gateway
        wait = self._connect_wait(step, settle)

        def ask(request: m.Request) -> m.Answer:
            return gateway.call(step.host, request, step.timeout, connect_wait=wait)

        try:
            if settle and step.settle is not None:
                answer = step.settle(ask)
                if answer is not None:
                    log.info("%s to host %s was already carried out (its answer was not recorded); not sent again",
                             type(step.request).__name__, step.host.name)
                    return True, answer
            return True, gateway.call(step.host, step.request, step.timeout, connect_wait=wait)
        except CallLost as e:
            if settle or step.settle is None:
                return False, e
            # The server holding the agent went away with the request: once the agent is back
            # (here or on another server), the host says whether it carried it out.
            log.warning("%s; asking the host whether it carried out %s", e.text, type(step.request).__name__)
            return self._agent_step(step, True)
        except AgentAbsent as e:
            if settle:
                # Sent before the restart, perhaps: the host's agent stayed away and cannot say.
                return False, ResourceUnavailable(f"{e.text} within {wait:g} s; {type(step.request).__name__} may "
                                                  f"have been carried out before the engine restarted")
            return False, e
        except Exception as e:
            return False, e

    def _connect_wait(self, step: AgentStep, settle: bool) -> float:
        """How long the step waits for the host's agent to be connected. A step that may have been
        carried out already waits as long as a silent host stays anything but Down (2 x
        ping.interval x ping.timeout + agent.reconnect.grace; at least the step's own wait):
        after a management server stopped, its agents reconnect to another one, and only the
        host can say what it did. A step that skips absent agents (no wait) still does not wait."""
        if not settle or step.connect_wait <= 0:
            return step.connect_wait
        return max(step.connect_wait, self.engine.gateway.down_within)

    def _wait_step(self, job_uuid: str, step: WaitStep) -> tuple[bool, Any]:
        try:
            return True, step.fn(Waiter(self, job_uuid), *step.args)
        except DatabaseUnavailable:
            raise
        except Exception as e:
            return False, e

    def _record(self, job_uuid: str, cursor: _Cursor, outcomes: list[dict], begun: Begun,
                failure: BaseException | None = None) -> None:
        """Record outcomes and the next step in a transaction of their own, with the final status
        when the job ended."""
        ctx = None
        with self.engine.db.transaction() as s:
            job = _job(s, job_uuid, lock=True)
            if not self._mine(job):
                return
            _record_into(job, cursor, outcomes)
            if failure is not None:
                _fail_into(job, failure)
            elif cursor.done:
                ctx = self.commands.context(s, job)
                _end(job, begun, cursor.value, ctx)
        if ctx is not None:
            self.commands.after_commit(ctx)

    def _fail(self, job_uuid: str, error: BaseException) -> None:
        if getattr(error, "retry_job", False):
            return
        try:
            with self.engine.db.transaction() as s:
                job = _job(s, job_uuid, lock=True)
                if not self._mine(job):
                    return
                _fail_into(job, error)
        except DatabaseUnavailable as e:
            log.warning("could not record the failure of job %s, it runs again: %s", job_uuid, e.text)
            self.defer(job_uuid)
        except Exception:
            log.exception("could not record the failure of job %s", job_uuid)


class _Cursor:
    """A job's generator, fed the recorded outcomes first and live ones after."""

    def __init__(self, steps: Steps, recorded: list[dict]):
        self.steps = steps
        self.recorded = recorded
        self.index = 0              # the index of the step the generator is waiting on
        self.done = False
        self.value: Any = None

    def start(self) -> Step | None:
        step = self._advance(lambda: next(self.steps))
        for outcome in self.recorded:
            if self.done:
                break
            ok, value = replay(outcome)
            step = self._advance(lambda ok=ok, value=value: self.steps.send(value) if ok else self.steps.throw(value))
            self.index += 1
        return step

    def send(self, ok: bool, value: Any) -> Step | None:
        self.index += 1
        return self._advance(lambda: self.steps.send(value) if ok else self.steps.throw(value))

    def _advance(self, fn: Callable[[], Step]) -> Step | None:
        try:
            return fn()
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None

    def close(self) -> None:
        self.steps.close()


def _job(session: Session, job_uuid: str, lock: bool = False) -> AsyncJob | None:
    q = select(AsyncJob).where(AsyncJob.uuid == job_uuid)
    if lock:
        q = q.with_for_update()
    return session.execute(q).scalar_one_or_none()


def _record_into(job: AsyncJob, cursor: _Cursor, outcomes: list[dict]) -> None:
    job.step_results = list(job.step_results or ()) + outcomes
    job.step = cursor.index


def _shaped(begun: Begun, value: Any, ctx: Any) -> dict:
    """The job's result from what its command returned: a `Result` is read here, in `ctx`'s
    transaction (the one recording the end)."""
    if isinstance(value, Result):
        value = value.fn(ctx, *value.args)
    return begun.shape(value)


def _end(job: AsyncJob, begun: Begun, value: Any, ctx: Any) -> None:
    """The job ends with `value`: Succeeded with its shaped result, or Failed when reading it
    failed (what the job did stays recorded)."""
    try:
        result = _shaped(begun, value, ctx)
    except DatabaseUnavailable:
        raise
    except Exception as e:
        log.warning("job %s: reading its result failed: %s", job.uuid, e)
        _fail_into(job, e)
    else:
        _finish(job, result)


def _finish(job: AsyncJob, result: dict) -> None:
    job.status, job.result_code, job.result_type = SUCCEEDED, 0, "object"
    job.result = result
    job.completed = utcnow()


def _fail_into(job: AsyncJob, error: BaseException) -> None:
    if isinstance(error, ApiError):
        code, text = error.errorcode, error.text
        log.info("job %s failed: %s (%d)", job.uuid, text, code)
    else:
        code, text = 530, str(error) or error.__class__.__name__
        log.error("job %s failed with an internal error", job.uuid, exc_info=error)
    job.status, job.result_code, job.result_type = FAILED, code, "object"
    job.result = {"errorcode": code, "errortext": text}
    job.completed = utcnow()


def _log_step_failure(job_uuid: str, step: DbStep, error: BaseException) -> None:
    if isinstance(error, ApiError):
        log.debug("job %s: step %s failed: %s", job_uuid, step.fn.__name__, error.text)
    else:
        log.error("job %s: step %s failed with an internal error", job_uuid, step.fn.__name__, exc_info=error)
