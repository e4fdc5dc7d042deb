"""List answers: a page of rows, read by a service, as the items and count of a list command."""

from .registry import ListResult


def listed(page, render=None, render_many=None):
    """The ListResult of `page` (services.queries.Page): `render(row)` shapes one item;
    `render_many(rows)`, when given, shapes the whole page at once, so that what the items
    refer to can be loaded once per page."""
    if page.total == 0:
        return ListResult([], 0)
    if render_many is not None:
        return ListResult(render_many(page.rows), page.total)
    return ListResult([render(row) for row in page.rows], page.total)
