"""API throttling counted per account across every management server of the database.

Each call of a throttled account counts in one row of `api_counter` (fixed windows of
api.throttling.interval seconds, as CloudStack's): one conditional UPDATE, or an INSERT for
the account's first call, in a transaction of its own, so N servers together allow
api.throttling.max calls per window, not N times as many. Window starts are the servers'
clocks (epoch seconds): they must agree (NTP) to well within the interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..persistence.models import ApiCounter

if TYPE_CHECKING:
    from ..persistence.db import Database


def count_call(db: Database, account_id: int, interval: float, now: float) -> tuple[int, float]:
    """Count one call of `account_id` at `now`; (calls in its window so far, the window's start)."""
    expired = ApiCounter.window_start <= now - interval
    # `count` before `window_start`: MySQL assigns left to right, and `count` must see the old start.
    counted = (update(ApiCounter).where(ApiCounter.account_id == account_id)
               .values(count=case((expired, 1), else_=ApiCounter.count + 1),
                       window_start=case((expired, now), else_=ApiCounter.window_start))
               .execution_options(synchronize_session=False))
    for _attempt in range(2):
        try:
            with db.transaction() as s:
                if not s.execute(counted).rowcount:
                    s.execute(insert(ApiCounter).values(account_id=account_id, window_start=now, count=1))
                    return 1, now
                count, start = s.execute(select(ApiCounter.count, ApiCounter.window_start)
                                         .where(ApiCounter.account_id == account_id)).one()
                return count, start
        except IntegrityError:
            continue    # another server counted the account's first call at the same time
    raise RuntimeError(f"could not count an API call of account {account_id}")


def window(db: Database, account_id: int) -> tuple[int, float] | None:
    """(calls, window start) of `account_id`'s current window as last counted; None without one."""
    with db.transaction(readonly=True) as s:
        row = s.execute(select(ApiCounter.count, ApiCounter.window_start)
                        .where(ApiCounter.account_id == account_id)).first()
    return (row[0], row[1]) if row is not None else None


def reset(db: Database, account_id: int | None = None) -> None:
    """Start the count of `account_id` (of every account when None) over."""
    with db.transaction() as s:
        q = delete(ApiCounter)
        if account_id is not None:
            q = q.where(ApiCounter.account_id == account_id)
        s.execute(q)
