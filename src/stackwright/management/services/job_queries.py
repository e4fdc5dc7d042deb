"""Reads of async jobs: listAsyncJobs and who a job belongs to."""

import datetime as dt

from sqlalchemy import select

from ..errors import InvalidParameterValue
from ..persistence.models import Account, AsyncJob, Domain, User
from .queries import filtered, keyword, page

JOB_FILTERS = (keyword(AsyncJob.command),)


class JobQueries:
    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    def list_jobs(self, p):
        """The caller's jobs (every job for root admins with listall), by account and start date."""
        ctx = self.ctx
        q = select(AsyncJob)
        if not (ctx.is_root_admin and p.listall):
            q = q.where(AsyncJob.account_id == ctx.user.account_id)
        if p.account:
            q = q.join(Account, Account.id == AsyncJob.account_id).where(Account.name == p.account)
        if p.startdate:
            try:
                start = dt.datetime.fromisoformat(p.startdate.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidParameterValue("Unable to parse date %s for parameter startdate" % p.startdate) from None
            q = q.where(AsyncJob.created >= start.replace(tzinfo=None))
        return page(ctx, p, filtered(q, JOB_FILTERS, p), AsyncJob.id)

    def owner(self, job):
        """(account, user, domain) of `job`; each None when gone."""
        account = self.session.get(Account, job.account_id)
        user = self.session.get(User, job.user_id)
        domain = self.session.get(Domain, account.domain_id) if account else None
        return account, user, domain
