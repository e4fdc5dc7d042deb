"""The API's answer cache: an answer is served only while no write has committed since it
was computed, and never across callers."""

import pytest
from sqlalchemy import text

from stackwright.management import commands  # noqa: F401  # pylint: disable=unused-import  # fills the registry
from stackwright.management.api.cache import ResponseCache
from stackwright.management.api.registry import REGISTRY
from stackwright.management.context import Principal
from stackwright.management.options import load
from stackwright.management.persistence.db import Database

ADMIN, OTHER = Principal(1, 1, True, 1), Principal(2, 2, False, 4)
ZONES = REGISTRY["listZones"]


@pytest.fixture
def db(tmp_path):
    database = Database("sqlite:///%s" % (tmp_path / "cloud.db"))
    with database.transaction() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    yield database
    database.dispose()


def test_an_answer_lives_until_the_next_write(db):
    cache = ResponseCache(db)
    token = cache.token(ADMIN, ZONES, {"command": "listZones", "apiKey": "k", "signature": "s1"})
    cache.put(token, cache.generation, b"answer")
    # Credentials are not part of what an answer depends on.
    assert cache.get(cache.token(ADMIN, ZONES, {"command": "listZones", "apikey": "k", "signature": "s2"})) == b"answer"
    with db.transaction(readonly=True) as session:
        session.execute(text("SELECT count(*) FROM t"))
    assert cache.get(token) == b"answer"
    with db.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    assert cache.get(token) is None


def test_an_answer_computed_before_a_write_is_not_kept(db):
    cache = ResponseCache(db)
    token, generation = cache.token(ADMIN, ZONES, {"command": "listZones"}), cache.generation
    with db.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    cache.put(token, generation, b"stale")
    assert cache.get(token) is None


def test_a_failed_write_changes_nothing(db):
    cache = ResponseCache(db)
    token = cache.token(ADMIN, ZONES, {"command": "listZones"})
    cache.put(token, cache.generation, b"answer")
    with pytest.raises(RuntimeError), db.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("rolled back")
    assert cache.get(token) == b"answer"


def test_callers_and_parameters_are_kept_apart(db):
    cache = ResponseCache(db)
    cache.put(cache.token(ADMIN, ZONES, {"command": "listZones"}), cache.generation, b"admin")
    assert cache.get(cache.token(OTHER, ZONES, {"command": "listZones"})) is None
    assert cache.get(cache.token(ADMIN, ZONES, {"command": "listZones", "name": "z1"})) is None


def test_tokens_hold_exactly_the_declared_parameters(db):
    cache = ResponseCache(db)
    plain = cache.token(ADMIN, ZONES, {"command": "listZones"})
    # A name listZones does not declare (parameter names are matched exactly) changes nothing
    # in the answer, so it shares the plain request's token, never the filtered one's.
    assert cache.token(ADMIN, ZONES, {"command": "listZones", "Name": "z"}) == plain
    assert cache.token(ADMIN, ZONES, {"command": "listZones", "bogus": "1"}) == plain
    assert cache.token(ADMIN, ZONES, {"command": "listZones", "name": "z"}) != plain
    hosts = REGISTRY["listHosts"]
    assert cache.token(ADMIN, hosts, {"command": "listHosts"}) != plain


def test_the_oldest_answers_make_room(db):
    cache = ResponseCache(db, size=2)
    tokens = [cache.token(ADMIN, ZONES, {"command": "listZones", "page": str(i)}) for i in range(3)]
    for token in tokens:
        cache.put(token, cache.generation, b"x")
    assert [cache.get(token) for token in tokens] == [None, b"x", b"x"]


def test_nothing_is_cached_where_other_writers_may_exist(db):
    class SharedDatabase:
        is_sqlite = False
        write_generation = 0

    assert ResponseCache(SharedDatabase()).enabled is False
    assert ResponseCache(db, size=0).enabled is False


def test_cache_size_option(tmp_path):
    assert load(["--db-url", "sqlite:///x.db"]).api_cache_size == 256
    assert load(["--api-cache-size", "0"]).api_cache_size == 0
    config = tmp_path / "server.properties"
    config.write_text("api.cache.size=16\n")
    assert load(["--config", str(config)]).api_cache_size == 16
    with pytest.raises(SystemExit):
        load(["--api-cache-size", "-1"])
