"""High availability: hosts reserved by `ha.tag`, hosts declared Dead and their guests fenced
and restarted elsewhere, guests that crashed restarted, and a host back from the dead
stopping its stale copies. Jobs run through the real executor against in-process agents."""

from types import SimpleNamespace

import pytest

from stackwright.management.commands.hosts import render_hosts
from stackwright.management.persistence.models import ConfigValue
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vm_lifecycle import fresh, new_vm, start
from tests.unit.management.services.test_vms import World


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


@pytest.fixture
def world(ctx):
    return World(ctx)


@pytest.fixture
def ha_tag(ctx, jobs):
    """ha.tag set to `ha-only` for the test, removed afterwards."""
    def set_tag(value="ha-only"):
        ctx.session.add(ConfigValue(name="ha.tag", scope="global", resource_id=0, value=value))
        ctx.session.commit()
        jobs.engine.settings.invalidate()
        ctx.settings.invalidate()
        return value
    yield set_tag
    ctx.session.rollback()
    ctx.session.execute(ConfigValue.__table__.delete().where(ConfigValue.name == "ha.tag"))
    ctx.session.commit()
    jobs.engine.settings.invalidate()


HOST_PARAMS = ("id", "zoneid", "podid", "clusterid", "name", "type", "state", "resourcestate", "hypervisor",
               "keyword", "page", "pagesize", "hahost", "outofbandmanagementenabled")


def hosts_listed(ctx, **given):
    p = SimpleNamespace(**{**dict.fromkeys(HOST_PARAMS), **given})
    return [(v["name"], v["hahost"]) for v in render_hosts(ctx, ctx.hosts.list_page(p).rows)]


def test_ordinary_deploys_never_land_on_ha_hosts(ctx, world, gateway, jobs, ha_tag):
    reserved = world.host(tags="ha-only,ssd")
    world.pool()
    gateway.add(reserved.guid)
    ctx.session.commit()
    ha_tag()
    vm = new_vm(ctx, world)
    code, text = failure(start(ctx, jobs, vm))
    assert code == 533 and "carry the HA tag ha-only (ha.tag): they take only HA restarts" in text
    plain = world.host()
    gateway.add(plain.guid)
    ctx.session.commit()
    assert start(ctx, jobs, vm).status == 1
    assert fresh(ctx, vm).host_id == plain.id
    # An administrator may still place a guest there.
    other = new_vm(ctx, world)
    assert start(ctx, jobs, other, hostid=reserved.uuid).status == 1
    assert fresh(ctx, other).host_id == reserved.id


def test_list_hosts_hahost(ctx, world, ha_tag):
    names = [world.host(tags="ha-only").name, world.host(tags="ssd").name, world.host().name]
    ctx.session.commit()
    assert all(ha is False for _n, ha in hosts_listed(ctx, clusterid=world.cluster))
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=True) == []
    ha_tag()
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=True) == [(names[0], True)]
    assert hosts_listed(ctx, clusterid=world.cluster, hahost=False) == [(names[1], False), (names[2], False)]
    assert dict(hosts_listed(ctx, clusterid=world.cluster))[names[0]] is True
