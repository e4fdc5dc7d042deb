"""API throttling counted per account across every management server of the database.

Each call of a throttled account counts in one row of `api_counter` (fixed windows of
api.throttling.interval seconds, as CloudStack's): one conditional UPDATE, or an INSERT for
the account's first call, in a transaction of its own, so N servers together allow
api.throttling.max calls per window, not N times as many. Window starts are the servers'
clocks (epoch seconds): they must agree (NTP) to well within the interval.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..persistence.models import ApiCounter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from ..persistence.db import Database


@contextlib.contextmanager
def _unit(db: Database, session: Session | None, readonly: bool = False) -> Iterator[Session]:
    """`session` (a request's own write transaction: on SQLite a second writer from the same
    request would wait for it), or a transaction of its own."""
    if session is not None:
        yield session
    else:
        with db.transaction(readonly=readonly) as s:
            yield s


def count_call(db: Database, account_id: int, interval: float, now: float,
               session: Session | None = None) -> tuple[int, float]:
    """Count one call of `account_id` at `now` (in `session` when given); (calls in its window so
    far, the window's start)."""
    expired = ApiCounter.window_start <= now - interval
    # `count` before `window_start`: MySQL assigns left to right, and `count` must see the old start.
    counted = (update(ApiCounter).where(ApiCounter.account_id == account_id)
               .values(count=case((expired, 1), else_=ApiCounter.count + 1),
                       window_start=case((expired, now), else_=ApiCounter.window_start))
               .execution_options(synchronize_session=False))
    for _attempt in range(2):
        try:
            with _unit(db, session) as s:
                if not s.execute(counted).rowcount:
                    with s.begin_nested():
                        s.execute(insert(ApiCounter).values(account_id=account_id, window_start=now, count=1))
                    return 1, now
                count, start = s.execute(select(ApiCounter.count, ApiCounter.window_start)
                                         .where(ApiCounter.account_id == account_id)).one()
                return count, start
        except IntegrityError:
            continue    # another server counted the account's first call at the same time
    raise RuntimeError(f"could not count an API call of account {account_id}")


def window(db: Database, account_id: int, session: Session | None = None) -> tuple[int, float] | None:
    """(calls, window start) of `account_id`'s current window as last counted; None without one."""
    with _unit(db, session, readonly=True) as s:
        row = s.execute(select(ApiCounter.count, ApiCounter.window_start)
                        .where(ApiCounter.account_id == account_id)).first()
    return (row[0], row[1]) if row is not None else None


def reset(db: Database, account_id: int | None = None, session: Session | None = None) -> None:
    """Start the count of `account_id` (of every account when None) over."""
    with _unit(db, session) as s:
        q = delete(ApiCounter)
        if account_id is not None:
            q = q.where(ApiCounter.account_id == account_id)
        s.execute(q)
