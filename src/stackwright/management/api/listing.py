"""List answers: a page of rows, read by a service, as the items and count of a list command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import ListResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..services.queries import Page


def listed(page: Page, render: Callable[[Any], dict[str, Any]] | None = None,
           render_many: Callable[[list[Any]], list[dict[str, Any]]] | None = None) -> ListResult:
    """The ListResult of `page` (services.queries.Page): `render(row)` shapes one item;
    `render_many(rows)`, when given, shapes the whole page at once, so that what the items
    refer to can be loaded once per page."""
    if page.total == 0:
        return ListResult([], 0)
    if render_many is not None:
        return ListResult(render_many(page.rows), page.total)
    return ListResult([render(row) for row in page.rows], page.total)
