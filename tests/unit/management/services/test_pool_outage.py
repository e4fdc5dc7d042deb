"""A primary pool that stops answering its hosts: marked unreachable with one alert, Up again
when it answers (the hosts of its cluster then resume the guests it paused), and guests its
outage paused are alerted once."""

from sqlalchemy import select

from stackwright.management.persistence.models import Alert, StoragePool
from stackwright.management.services import alerts
from stackwright.management.services.registration import RegistrationService
from stackwright.protocol import messages as m
from tests.unit.management.services.test_vms import World


def subjects(ctx, type_code, like):
    ctx.session.commit()
    rows = ctx.session.execute(select(Alert.subject).where(
        Alert.type == type_code, Alert.subject.like(f"%{like}%")).order_by(Alert.id)).scalars().all()
    ctx.session.commit()            # the test's session holds no transaction while the service writes
    return rows


def pool_row(ctx, pool):
    ctx.session.commit()
    row = ctx.session.get(StoragePool, pool.id, populate_existing=True)
    state = (row.state, row.status_message, row.capacity_bytes)
    ctx.session.commit()
    return state


def test_a_pool_outage_is_alerted_once_and_its_end_resumes_the_cluster(job_ctx, jobs):
    ctx = job_ctx
    world = World(ctx)
    cluster = world.new_cluster(hypervisor="KVM")
    first, second = world.host(cluster), world.host(cluster)
    world.host(cluster, state="Alert")                          # not Up: never asked, never told
    pool = world.pool(cluster)
    pool.url = "nfs://127.0.0.1/export/outage"
    world.pool()                                                # a Simulator cluster's: not watched
    vm = world.vm(first)
    ctx.session.commit()
    registration = RegistrationService(jobs.engine)
    checks = {spec.uuid: (up, guids) for spec, up, guids in registration.pools_to_check()}
    assert checks == {pool.uuid: (True, [first.guid, second.guid])}
    assert registration.pool_check_interval() == 60.0

    for _round in range(3):                                     # three rounds without an answer
        registration.pool_lost(pool.uuid, "timed out after 60 s")
    state, message, _size = pool_row(ctx, pool)
    assert state == "Initialized" and "timed out" in message
    lost = subjects(ctx, alerts.STORAGE_MISC, pool.uuid)
    assert len(lost) == 1 and "is unreachable: timed out after 60 s" in lost[0]
    (spec, up, _guids), = [c for c in registration.pools_to_check() if c[0].uuid == pool.uuid]
    assert up is False                                          # asked to attach again next round

    registration.guests_io_paused(first.guid, [vm.instance_name])
    paused = subjects(ctx, alerts.USERVM, vm.instance_name)
    assert len(paused) == 1 and "is paused on host %s" % first.name in paused[0]

    stats = m.PoolStats(capacity_bytes=10 << 30, used_bytes=1 << 30, available_bytes=9 << 30)
    assert sorted(registration.pool_answered(pool.uuid, stats)) == sorted([first.guid, second.guid])
    assert pool_row(ctx, pool) == ("Up", None, 10 << 30)
    assert any("answers again" in a for a in subjects(ctx, alerts.STORAGE_MISC, pool.uuid))
    assert registration.pool_answered(pool.uuid, stats) == []   # Up already: nobody to resume
