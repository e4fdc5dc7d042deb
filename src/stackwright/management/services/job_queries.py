"""Reads of async jobs: listAsyncJobs and who a job belongs to."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import InvalidParameterValue
from ..persistence.models import Account, AsyncJob, Domain, User
from .queries import filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context
    from .queries import Page

JOB_FILTERS = (keyword(AsyncJob.command),)


class JobQueries:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def list_jobs(self, p: SimpleNamespace) -> Page:
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
                raise InvalidParameterValue(f"Unable to parse date {p.startdate} for parameter startdate") from None
            q = q.where(AsyncJob.created >= start.replace(tzinfo=None))
        return page(ctx, p, filtered(q, JOB_FILTERS, p), AsyncJob.id)

    def owner(self, job: AsyncJob) -> tuple[Account | None, User | None, Domain | None]:
        """(account, user, domain) of `job`; each None when gone."""
        account = self.session.get(Account, job.account_id)
        user = self.session.get(User, job.user_id)
        domain = self.session.get(Domain, account.domain_id) if account else None
        return account, user, domain
