"""Async jobs run in unit tests the way the engine's workers run them: the job executor with
the API's commands (or a system job of the test's own), on the test's thread, against a
recording gateway."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import select

from stackwright.management.api.execute import ApiJobs
from stackwright.management.engine import capacity_checker
# Importing the command families fills the registry.
import stackwright.management.commands  # noqa: F401  # pylint: disable=unused-import
from stackwright.management.persistence.models import AsyncJob, User
from stackwright.management.services.configuration import GlobalSettings
from stackwright.management.services.jobs import JobExecutor
from tests.support.servers import registered_server


class JobHarness:
    def __init__(self, db, gateway):
        self.db = db
        self.gateway = gateway
        self.submitted: list[str] = []
        self.engine = SimpleNamespace(db=db, settings=GlobalSettings(db), gateway=gateway, cluster=registered_server(db),
                                      jobs=SimpleNamespace(submit=lambda job_uuid, command=None: self.submitted.append(job_uuid)))
        self.engine.capacity_checker = capacity_checker(self.engine)    # not started
        self.executor = JobExecutor(self.engine, ApiJobs(self.engine), workers=0)

    def submit(self, user: User, command: str, instance_uuid: str | None = None, **params: str) -> str:
        with self.db.transaction() as s:
            job = AsyncJob(command=command, cmd_class=command, params=params, user_id=user.id,
                           account_id=user.account_id, instance_type="VirtualMachine", instance_uuid=instance_uuid)
            s.add(job)
            s.flush()
            return job.uuid

    def run(self, job_uuid: str) -> AsyncJob:
        """Run (or go on with) a job once; the job's row afterwards."""
        self.executor.run(job_uuid)
        return self.job(job_uuid)

    def job(self, job_uuid: str) -> AsyncJob:
        with self.db.transaction(readonly=True) as s:
            return s.execute(select(AsyncJob).where(AsyncJob.uuid == job_uuid)).scalar_one()

    def call(self, user: User, command: str, instance_uuid: str | None = None, **params: str) -> AsyncJob:
        return self.run(self.submit(user, command, instance_uuid, **params))


def failure(job: AsyncJob) -> tuple[int, str]:
    """(error code, text) of a failed job."""
    assert job.status == 2, f"job {job.command} did not fail: status {job.status}, result {job.result}"
    return job.result["errorcode"], job.result["errortext"]
