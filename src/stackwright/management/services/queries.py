"""List reads: filters declared as data, one function that applies them, and paging.

A service declares what each list parameter matches, e.g.

    HOST_FILTERS = (
        Filter("id", Host.id, ROW),               # a row named by a Uuid parameter: its id
        Filter("name", Host.name, NOCASE),        # case-insensitive equality
        Filter("accounttype", Account.account_type, EXACT),
        Filter("ids", Zone.id, ROWS),             # a list of rows: any of their ids
        keyword(Host.name, Host.ip_address),      # `keyword`: a substring of any of the columns
    )

and `filtered(query, HOST_FILTERS, p)` adds a condition for each parameter given. A parameter
that is absent (None) or an empty string or list adds nothing; False and 0 are values.
`page(ctx, p, statement, order_by)` then reads the page that `page` and `pagesize` ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, inspect, or_, select

from ..errors import InvalidParameterValue, ParameterError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import SimpleNamespace

    from sqlalchemy import ColumnElement, Select, SQLColumnExpression
    from sqlalchemy.orm import Session

    from ..context import Context
    from ..persistence.models import Entity

S = TypeVar("S", bound="Select[Any]")
E = TypeVar("E", bound="Entity")

EXACT = "exact"        # column == value (a boolean column: IS value)
NOCASE = "nocase"      # lower(column) == lower(value)
ROW = "row"            # the value is a row (a Uuid parameter): column == its id
ROWS = "rows"          # the value is a list of rows: column IN their ids
KEYWORD = "keyword"    # the value is a substring of any of `columns`, case-insensitive


@dataclass(frozen=True)
class Filter:
    """API parameter `param` matches `column` (`columns` for KEYWORD) as `match` says."""

    param: str
    column: object = None
    match: str = EXACT
    columns: tuple = ()


def keyword(*columns: SQLColumnExpression[str]) -> Filter:
    """The `keyword` parameter of list commands, over `columns`."""
    return Filter("keyword", match=KEYWORD, columns=columns)


def ci_equals(column: SQLColumnExpression[str], value: str) -> ColumnElement[bool]:
    return func.lower(column) == value.lower()


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) matching `text` anywhere, lower-cased."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def condition(f: Filter, value: Any) -> ColumnElement[bool]:
    """The SQL condition of filter `f` for parameter value `value` (given)."""
    if f.match == EXACT:
        return f.column.is_(value) if isinstance(value, bool) else f.column == value
    if f.match == NOCASE:
        return ci_equals(f.column, value)
    if f.match == ROW:
        return f.column == value.id
    if f.match == ROWS:
        return f.column.in_([row.id for row in value])
    if f.match == KEYWORD:
        pattern = like_pattern(value)
        return or_(*(func.lower(c).like(pattern, escape="\\") for c in f.columns))
    raise ValueError(f"unknown match kind {f.match!r}")


def filtered(query: S, filters: Iterable[Filter], p: SimpleNamespace) -> S:
    """`query` narrowed by every filter whose parameter `p` gives (see the module's docstring)."""
    for f in filters:
        value = getattr(p, f.param, None)
        if value is None or (isinstance(value, (str, list, tuple)) and not value):
            continue
        query = query.where(condition(f, value))
    return query


# --- paging -----------------------------------------------------------------------------------


def page_size_limit(ctx: Context) -> int:
    return int(ctx.settings.get("default.page.size"))


def check_paging(ctx: Context, p: SimpleNamespace) -> tuple[int, int | None]:
    """Validate page/pagesize; returns (offset, limit) with limit None for 'all'."""
    page, size = getattr(p, "page", None), getattr(p, "pagesize", None)
    if size is not None and page is None:
        raise ParameterError('"page" parameter is required when "pagesize" is specified')
    if page is not None and size is None:
        raise ParameterError('"pagesize" parameter is required when "page" is specified')
    limit = page_size_limit(ctx)
    if page is None:
        return 0, limit
    if size == -1:
        return 0, None
    if size > limit:
        raise ParameterError(f"Page size can't exceed max allowed page size value: {limit}")
    if page < 1 or size < 1:
        raise InvalidParameterValue("page and pagesize must be positive integers")
    return (page - 1) * size, size


@dataclass
class Page:
    """One page of a list: its `rows` and `total`, the number of matches over all pages."""

    rows: list
    total: int


def page(ctx: Context, p: SimpleNamespace, statement: Select[Any], order_by: SQLColumnExpression[Any],
         whole_rows: bool = False) -> Page:
    """Run the select `statement` for the page `p` asks for, ordered by `order_by`.

    The rows are the statement's first column's values (entities), or with `whole_rows` its
    rows of columns. The total is counted only when the page does not tell it.
    """
    offset, limit = check_paging(ctx, p)
    q = statement.order_by(order_by).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    session = ctx.session
    session.flush()
    if whole_rows:
        # Plain rows of columns need no ORM processing: read them through the connection.
        rows = session.connection().execute(q).all()
    else:
        rows = session.execute(q).unique().scalars().all()
    if limit is None or (len(rows) < limit and (rows or offset == 0)):
        # The last page: the total is known without counting.
        total = offset + len(rows)
    else:
        total = session.connection().execute(
            select(func.count()).select_from(statement.order_by(None).subquery())
        ).scalar_one()
    if total == 0:
        return Page([], 0)
    return Page(rows, total)


# --- rows a view refers to ----------------------------------------------------------------


def rows_by_id(session: Session, model: type[E], ids: Iterable[int | None]) -> dict[int, E]:
    """{id: row} of `model` for `ids` (None left out), in one query: what a page of views
    refers to is read once for the page."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    # Rows this transaction holds already are not read again (one VM's view in a job's step).
    found: dict[int, E] = {}
    for i in ids:
        row = session.identity_map.get(session.identity_key(model, i))
        if row is not None and not inspect(row).expired:
            found[i] = row
    missing = ids - found.keys()
    if missing:
        found.update((row.id, row) for row in session.execute(
            select(model).where(model.id.in_(missing))).unique().scalars())
    return found


def by_id(session: Session, model: type[E], row_id: int) -> E:
    """The `model` row whose id is `row_id` (e.g. the object of a job's step); it must exist."""
    row = session.get(model, row_id)
    if row is None:
        raise LookupError(f"no {model.__name__} with id {row_id}")
    return row


def by_uuid(session: Session, model: type[E], uuid: str) -> E:
    """The `model` row whose uuid is `uuid` (e.g. the instance of a job); it must exist."""
    return session.execute(select(model).where(model.uuid == uuid)).unique().scalar_one()
