"""Async jobs: queryAsyncJobResult, listAsyncJobs."""

from sqlalchemy import select

from ..api.listing import keyword_filter, page_of
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import api_command
from ..formatting import compact, date
from ..persistence.models import Account, AsyncJob, Domain, User


def job_view(job, account=None, user=None, domain=None):
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


def _owner(ctx, job):
    account = ctx.session.get(Account, job.account_id)
    user = ctx.session.get(User, job.user_id)
    domain = ctx.session.get(Domain, account.domain_id) if account else None
    return account, user, domain


@api_command("queryAsyncJobResult", admin_only=False, readonly=True, params=[
    Param("jobid", String(), required=True, description="the ID of the asynchronous job"),
])
def query_async_job_result(ctx, p):
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
def list_async_jobs(ctx, p):
    """Lists all pending asynchronous jobs for the account."""
    q = select(AsyncJob)
    if not (ctx.is_root_admin and p.listall):
        q = q.where(AsyncJob.account_id == ctx.user.account_id)
    if p.account:
        q = q.join(Account, Account.id == AsyncJob.account_id).where(Account.name == p.account)
    if p.startdate:
        import datetime as dt

        try:
            start = dt.datetime.fromisoformat(p.startdate.replace("Z", "+00:00"))
        except ValueError:
            from ..errors import InvalidParameterValue

            raise InvalidParameterValue("Unable to parse date %s for parameter startdate" % p.startdate) from None
        q = q.where(AsyncJob.created >= start.replace(tzinfo=None))
    q = keyword_filter(q, p, AsyncJob.command)
    return page_of(ctx, p, q, AsyncJob.id, lambda job: job_view(job, *_owner(ctx, job)))
