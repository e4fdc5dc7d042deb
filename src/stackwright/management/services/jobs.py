"""Async jobs: rows in the database, run by a bounded pool of worker threads.

A job's own changes and its final status are committed in one transaction, so a kill of
the engine at any point leaves the job either pending (its work not committed; it runs
again after the restart) or final (its work committed exactly once).

A job that meets an unavailable database changed nothing and stays pending: it is tried
again every few seconds until the database is back, without a restart of the engine.
"""

import logging
import queue
import threading
import time

from sqlalchemy import select

from ..errors import ApiError, DatabaseUnavailable, InvalidParameterValue, PermissionDenied
from ..persistence.models import AsyncJob, utcnow

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED, CANCELLED = 0, 1, 2, 3
# Seconds before a job that met an unavailable database is tried again.
RETRY_SECONDS = 2.0


class JobService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    def create(self, command, raw_params, instance_type=None, instance_uuid=None):
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
        )
        self.session.add(job)
        self.session.flush()
        return job

    def get_visible(self, job_uuid):
        job = self.session.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one_or_none()
        if job is None:
            raise InvalidParameterValue("Unable to find a job with id %s" % job_uuid)
        if not self.ctx.is_root_admin and job.account_id != self.ctx.user.account_id:
            raise PermissionDenied("Account %s does not have permission to access job %s"
                                   % (self.ctx.account.name, job_uuid))
        return job


class JobExecutor:
    """Runs pending jobs on `workers` threads; picks up jobs left pending by a restart.

    `run_job(engine, session, job)` runs one job's command in `session` and returns its result."""

    def __init__(self, engine, run_job, workers=4):
        self.engine = engine
        self.run_job = run_job
        self.workers = workers
        self._queue = queue.Queue()
        self._threads = []
        self._stopping = threading.Event()
        self._running = set()
        self._lock = threading.Lock()
        # Jobs waiting for the database to come back, resubmitted by the retry thread.
        self._deferred = set()
        self._retry_thread = None

    def start(self):
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name="job-worker-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        self._retry_thread = threading.Thread(target=self._retry_deferred, name="job-retry", daemon=True)
        self._retry_thread.start()
        with self.engine.db.transaction(readonly=True) as s:
            pending = s.execute(
                select(AsyncJob.uuid).where(AsyncJob.status == PENDING).order_by(AsyncJob.id)
            ).scalars().all()
        if pending:
            log.info("resuming %d pending async job(s) after restart", len(pending))
        for job_uuid in pending:
            self.submit(job_uuid)

    def submit(self, job_uuid):
        self._queue.put(job_uuid)

    def defer(self, job_uuid):
        """Run the job again once RETRY_SECONDS have passed (the database was away)."""
        with self._lock:
            self._deferred.add(job_uuid)

    def _retry_deferred(self):
        while not self._stopping.wait(RETRY_SECONDS):
            with self._lock:
                due, self._deferred = self._deferred, set()
            for job_uuid in sorted(due):
                self.submit(job_uuid)

    def stop(self, timeout=10.0):
        """Stop taking jobs; wait (bounded) for running ones to finish."""
        self._stopping.set()
        for _thread in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads + ([self._retry_thread] if self._retry_thread else []):
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def busy(self):
        with self._lock:
            return len(self._running)

    def _work(self):
        while not self._stopping.is_set():
            job_uuid = self._queue.get()
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

    def run(self, job_uuid):
        started = time.monotonic()
        try:
            with self.engine.db.transaction() as s:
                job = s.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one_or_none()
                if job is None or job.status != PENDING:
                    return
                job.result = self.run_job(self.engine, s, job)
                job.status, job.result_code = SUCCEEDED, 0
                job.result_type = "object"
                job.completed = utcnow()
                cmd = job.command
            log.info("job %s %s succeeded in %.3fs", job_uuid, cmd, time.monotonic() - started)
        except DatabaseUnavailable as e:
            # Nothing of the job was committed (or, if its commit did reach the database,
            # the job is final and the next run sees that and stops): try again later.
            log.warning("job %s waits for the database: %s", job_uuid, e.text)
            self.defer(job_uuid)
            return
        except Exception as e:
            if isinstance(e, ApiError):
                code, text = e.errorcode, e.text
                log.info("job %s failed: %s (%d)", job_uuid, text, code)
            else:
                code, text = 530, str(e) or e.__class__.__name__
                log.exception("job %s failed with an internal error", job_uuid)
            if getattr(e, "retry_job", False):
                return
            try:
                with self.engine.db.transaction() as s:
                    job = s.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one()
                    if job.status != PENDING:
                        return
                    job.status, job.result_code = FAILED, code
                    job.result_type = "object"
                    job.result = {"errorcode": code, "errortext": text}
                    job.completed = utcnow()
            except DatabaseUnavailable as e:
                log.warning("could not record the failure of job %s, it runs again: %s", job_uuid, e.text)
                self.defer(job_uuid)
            except Exception:
                log.exception("could not record the failure of job %s", job_uuid)
