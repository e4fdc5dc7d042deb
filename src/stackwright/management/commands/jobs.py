"""Async jobs: queryAsyncJobResult, listAsyncJobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import api_command
from ..formatting import compact, date
from ..persistence.models import Domain
from ..services.job_queries import JobQueries

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context
    from ..persistence.models import Account, AsyncJob, User


def job_view(job: AsyncJob, account: Account | None = None, user: User | None = None,
             domain: Domain | None = None) -> dict[str, Any]:
    view = {
        "jobid": job.uuid,
        "accountid": account.uuid if account else None,
        "account": account.name if account else None,
        "userid": user.uuid if user else None,
        "domainid": domain.uuid if domain else None,
        "domainpath": domain.path if domain else None,
        "cmd": job.cmd_class,
        "jobstatus": job.status,
        "jobprocstatus": 0,
        "jobresultcode": job.result_code,
        "jobinstancetype": job.instance_type,
        "jobinstanceid": job.instance_uuid,
        "created": date(job.created),
        "completed": date(job.completed),
    }
    if job.status != 0:
        view["jobresulttype"] = job.result_type or "object"
        view["jobresult"] = job.result or {}
    return compact(view)


def _owner(ctx: Context, job: AsyncJob) -> tuple[Account | None, User | None, Domain | None]:
    return JobQueries(ctx).owner(job)


@api_command("queryAsyncJobResult", admin_only=False, readonly=True, params=[
    Param("jobid", String(), required=True, description="the ID of the asynchronous job"),
])
def query_async_job_result(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Retrieves the current status of asynchronous job."""
    job = ctx.jobs.get_visible(p.jobid)
    return job_view(job, *_owner(ctx, job))


@api_command("listAsyncJobs", response="asyncjobs", admin_only=False, params=[
    Param("startdate", String(), description="the start date of the async job (yyyy-MM-dd'T'HH:mm:ss)"),
    Param("account", String(), description="list resources by account"),
    Param("domainid", Uuid(Domain), description="list only resources belonging to the domain specified"),
    Param("isrecursive", Boolean(), description="defaults to false"),
    Param("listall", Boolean(), description="If set to false, list only resources belonging to the command's caller"),
])
def list_async_jobs(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists all pending asynchronous jobs for the account."""
    return listed(JobQueries(ctx).list_jobs(p), lambda job: job_view(job, *_owner(ctx, job)))
