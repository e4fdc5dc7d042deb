"""services/queries.py on a real SQLite database: each match kind of a declared filter, and paging.

`ctx` (conftest.py) is a context on a migrated SQLite database, rolled back after each test.
"""

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from stackwright.management.errors import InvalidParameterValue, ParameterError
from stackwright.management.persistence.models import Zone
from stackwright.management.services.queries import (
    EXACT,
    NOCASE,
    ROW,
    ROWS,
    Filter,
    check_paging,
    filtered,
    keyword,
    page,
    page_size_limit,
)

FILTERS = (
    Filter("id", Zone.id, ROW),
    Filter("ids", Zone.id, ROWS),
    Filter("name", Zone.name, NOCASE),
    Filter("networktype", Zone.network_type, EXACT),
    Filter("securitygroups", Zone.security_groups_enabled, EXACT),
    keyword(Zone.name, Zone.description),
)


@pytest.fixture
def zones(ctx):
    rows = [
        Zone(name="Alpha", description="first", network_type="Advanced", details={}),
        Zone(name="beta_1", description="under_score", network_type="Basic", details={},
             security_groups_enabled=True),
        Zone(name="Gamma", description="100% sure", network_type="Advanced", details={}),
        Zone(name="betaX1", description="no underscore", network_type="Basic", details={}),
    ]
    ctx.session.add_all(rows)
    ctx.session.flush()
    return rows


def params(**given):
    names = ("id", "ids", "name", "networktype", "securitygroups", "keyword", "page", "pagesize")
    return SimpleNamespace(**dict(dict.fromkeys(names), **given))


def names(ctx, zones, **given):
    """The names of the test's zones the filters keep for `given` parameters, in id order."""
    q = filtered(select(Zone).where(Zone.id.in_([z.id for z in zones])), FILTERS, params(**given))
    return [z.name for z in ctx.session.execute(q.order_by(Zone.id)).scalars()]


def test_nothing_given_keeps_everything(ctx, zones):
    everything = ["Alpha", "beta_1", "Gamma", "betaX1"]
    assert names(ctx, zones) == everything
    # Empty strings and lists are not given either.
    assert names(ctx, zones, name="", ids=[], keyword="") == everything


def test_row_and_rows_match_ids(ctx, zones):
    assert names(ctx, zones, id=zones[2]) == ["Gamma"]
    assert names(ctx, zones, ids=[zones[0], zones[3]]) == ["Alpha", "betaX1"]


def test_nocase_matches_whole_values_whatever_their_case(ctx, zones):
    assert names(ctx, zones, name="ALPHA") == ["Alpha"]
    assert names(ctx, zones, name="alp") == []


def test_exact_is_case_sensitive_and_false_is_a_value(ctx, zones):
    assert names(ctx, zones, networktype="Basic") == ["beta_1", "betaX1"]
    assert names(ctx, zones, networktype="basic") == []
    assert names(ctx, zones, securitygroups=True) == ["beta_1"]
    assert names(ctx, zones, securitygroups=False) == ["Alpha", "Gamma", "betaX1"]


def test_keyword_is_a_substring_of_any_column_with_like_characters_taken_literally(ctx, zones):
    assert names(ctx, zones, keyword="BETA") == ["beta_1", "betaX1"]
    assert names(ctx, zones, keyword="a_1") == ["beta_1"]            # "_" is not a wildcard
    assert names(ctx, zones, keyword="0%") == ["Gamma"]              # "%" neither; found in description
    assert names(ctx, zones, keyword="under") == ["beta_1", "betaX1"]


def test_filters_combine(ctx, zones):
    assert names(ctx, zones, networktype="Basic", keyword="x") == ["betaX1"]


def test_paging_checks(ctx):
    limit = page_size_limit(ctx)
    assert check_paging(ctx, params()) == (0, limit)
    assert check_paging(ctx, params(page=3, pagesize=10)) == (20, 10)
    assert check_paging(ctx, params(page=2, pagesize=-1)) == (0, None)
    with pytest.raises(ParameterError, match='"page" parameter is required'):
        check_paging(ctx, params(pagesize=10))
    with pytest.raises(ParameterError, match='"pagesize" parameter is required'):
        check_paging(ctx, params(page=1))
    with pytest.raises(ParameterError, match="can't exceed max allowed page size value: %d" % limit):
        check_paging(ctx, params(page=1, pagesize=limit + 1))
    with pytest.raises(InvalidParameterValue, match="positive integers"):
        check_paging(ctx, params(page=0, pagesize=10))


def test_pages_and_their_totals(ctx, zones):
    ours = select(Zone).where(Zone.id.in_([z.id for z in zones]))

    def read(**given):
        result = page(ctx, params(**given), ours, Zone.id)
        return [z.name for z in result.rows], result.total

    assert read() == (["Alpha", "beta_1", "Gamma", "betaX1"], 4)
    assert read(page=1, pagesize=3) == (["Alpha", "beta_1", "Gamma"], 4)      # counted
    assert read(page=2, pagesize=3) == (["betaX1"], 4)                        # the last page tells
    assert read(page=2, pagesize=2) == (["Gamma", "betaX1"], 4)
    assert read(page=5, pagesize=2) == ([], 4)                                # past the end: still counted
    assert read(page=1, pagesize=-1) == (["Alpha", "beta_1", "Gamma", "betaX1"], 4)
    nothing = page(ctx, params(page=1, pagesize=2), ours.where(Zone.name == "none"), Zone.id)
    assert (nothing.rows, nothing.total) == ([], 0)


def test_whole_rows_are_rows_of_columns(ctx, zones):
    q = select(Zone.id, Zone.name).where(Zone.id.in_([z.id for z in zones]))
    result = page(ctx, params(page=1, pagesize=2), q, Zone.id, whole_rows=True)
    assert [tuple(r) for r in result.rows] == [(zones[0].id, "Alpha"), (zones[1].id, "beta_1")]
    assert result.total == 4
