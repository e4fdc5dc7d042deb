"""List conventions shared by every list command: paging, keyword and name filters."""

from sqlalchemy import func, or_, select

from ..errors import InvalidParameterValue, ParameterError
from .registry import ListResult


def page_size_limit(ctx):
    return int(ctx.config.get("default.page.size"))


def check_paging(ctx, p):
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
        raise ParameterError("Page size can't exceed max allowed page size value: %d" % limit)
    if page < 1 or size < 1:
        raise InvalidParameterValue("page and pagesize must be positive integers")
    return (page - 1) * size, size


def ci_equals(column, value):
    return func.lower(column) == value.lower()


def keyword_filter(query, p, *columns):
    keyword = getattr(p, "keyword", None)
    if keyword:
        pattern = "%" + keyword.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(*(func.lower(c).like(pattern, escape="\\") for c in columns)))
    return query


def page_of(ctx, p, statement, order_by, render, render_many=None, whole_rows=False):
    """Run the select `statement` for the requested page; `count` is the total of matches.

    `render(row)` shapes one item; `render_many(rows)`, when given, shapes the whole page at
    once, so that what the items refer to can be loaded once per page. With `whole_rows`
    the items are the statement's rows of columns rather than its first column's values.
    """
    offset, limit = check_paging(ctx, p)
    q = statement.order_by(order_by).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    result = ctx.session.execute(q)
    rows = result.all() if whole_rows else result.unique().scalars().all()
    if limit is None or (len(rows) < limit and (rows or offset == 0)):
        # The last page: the total is known without counting.
        total = offset + len(rows)
    else:
        total = ctx.session.execute(
            select(func.count()).select_from(statement.order_by(None).subquery())
        ).scalar_one()
    if total == 0:
        return ListResult([], 0)
    if render_many is not None:
        return ListResult(render_many(rows), total)
    return ListResult([render(row) for row in rows], total)
