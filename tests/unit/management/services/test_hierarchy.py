"""The hierarchy service on a real SQLite database: pod ranges, cluster rules, deletion guards."""

from types import SimpleNamespace

import netaddr
import pytest
from sqlalchemy import select

from stackwright.management.context import Context
from stackwright.management.errors import CloudRuntimeError, InvalidParameterValue
from stackwright.management.persistence.db import Database
from stackwright.management.persistence.models import Base, Cluster, Event, Host, Pod, StoragePool
from stackwright.management.services import hierarchy
from stackwright.management.services.configuration import GlobalSettings


@pytest.fixture
def db(tmp_path):
    database = Database("sqlite:///%s" % (tmp_path / "cloud.db"))
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def run(db):
    """run(fn) calls fn(ctx) in one transaction, committed unless fn raises."""
    engine = SimpleNamespace(settings=GlobalSettings(db), agents=None)

    def run(fn):
        with db.transaction() as session:
            return fn(Context(engine, session, None, "test"))

    return run


@pytest.fixture
def zone(run):
    return run(lambda ctx: ctx.hierarchy.create_zone(name="z1", dns1="8.8.8.8", network_type="Basic"))


def make_pod(run, zone, name="p1", gateway="10.0.0.1", netmask="255.255.255.0", start_ip="10.0.0.10", **kw):
    return run(lambda ctx: ctx.hierarchy.create_pod(
        zone=ctx.session.merge(zone), name=name, gateway=gateway, netmask=netmask, start_ip=start_ip, **kw))


def make_cluster(run, zone, pod, name="c1", hypervisor="KVM", **kw):
    return run(lambda ctx: ctx.hierarchy.add_cluster(
        zone=ctx.session.merge(zone), pod=ctx.session.merge(pod), name=name, hypervisor=hypervisor,
        kind="CloudManaged", **kw))


# --- pure rules -----------------------------------------------------------------------


@pytest.mark.parametrize("gateway, netmask, start, end, expected", [
    ("10.0.0.1", "255.255.255.0", "10.0.0.10", None, ("10.0.0.10", "10.0.0.254")),
    ("10.0.0.1", "255.255.255.0", "10.0.0.10", "", ("10.0.0.10", "10.0.0.254")),
    ("10.0.0.1", "255.255.255.0", "10.0.0.2", "10.0.0.2", ("10.0.0.2", "10.0.0.2")),
    ("172.16.5.1", "255.255.240.0", "172.16.6.0", None, ("172.16.6.0", "172.16.15.254")),
    ("192.168.1.254", "255.255.255.252", "192.168.1.253", "192.168.1.253", ("192.168.1.253", "192.168.1.253")),
    ("10.0.0.200", "255.255.255.0", "10.0.0.10", "10.0.0.100", ("10.0.0.10", "10.0.0.100")),
])
def test_pod_range_accepts(gateway, netmask, start, end, expected):
    subnet = hierarchy.pod_subnet(gateway, netmask)
    assert hierarchy.pod_range(subnet, gateway, start, end) == expected


@pytest.mark.parametrize("gateway, netmask, start, end, text", [
    ("10.0.0.1.", "255.255.255.0", "10.0.0.10", None, "The gateway is invalid"),
    ("010.0.0.1", "255.255.255.0", "10.0.0.10", None, "The gateway is invalid"),
    ("10.0.0.1", "24", "10.0.0.10", None, "The netmask is invalid"),
    ("10.0.0.1", "255.255.255.254", "10.0.0.10", None, "The netmask is invalid"),
    ("10.0.0.1", "0.255.255.255", "10.0.0.10", None, "The netmask is invalid"),
    ("10.0.0.0", "255.255.255.0", "10.0.0.10", None, "The gateway is not in the CIDR subnet."),
    ("10.0.0.1", "255.255.255.0", "10.0.0.0", None, "The start address of the IP range is not in the CIDR subnet."),
    ("10.0.0.1", "255.255.255.0", "10.0.1.5", None, "The start address of the IP range is not in the CIDR subnet."),
    ("10.0.0.1", "255.255.255.0", "10.0.0.5", "10.0.0.255", "The end address of the IP range is not in the CIDR subnet."),
    ("10.0.0.1", "255.255.255.0", "::1", None, "The start address of the IP range is not a valid IP address."),
    ("10.0.0.1", "255.255.255.0", "10.0.0.9", "10.0.0.8", "The start IP address must have a lower value than the end IP address."),
    ("10.0.0.9", "255.255.255.0", "10.0.0.9", None, "The gateway shouldn't overlap start/end IP addresses"),
    ("10.0.0.254", "255.255.255.0", "10.0.0.10", None, "The gateway shouldn't overlap start/end IP addresses"),
    ("192.168.1.254", "255.255.255.252", "192.168.1.253", None, "The gateway shouldn't overlap start/end IP addresses"),
])
def test_pod_range_refuses(gateway, netmask, start, end, text):
    with pytest.raises(InvalidParameterValue) as e:
        hierarchy.pod_range(hierarchy.pod_subnet(gateway, netmask), gateway, start, end)
    assert e.value.text == text


def test_pod_subnet_is_the_gateways_network():
    assert hierarchy.pod_subnet("10.1.2.3", "255.255.0.0") == netaddr.IPNetwork("10.1.0.0/16")


@pytest.mark.parametrize("fn, given, canonical", [
    (hierarchy.allocation_state, "eNaBlEd", "Enabled"),
    (hierarchy.hypervisor_type, "kvm", "KVM"),
    (hierarchy.hypervisor_type, "simulator", "Simulator"),
    (hierarchy.cluster_type, "EXTERNALMANAGED", "ExternalManaged"),
    (hierarchy.managed_state, "unmanaged", "Unmanaged"),
    (hierarchy.architecture, "X86_64", "x86_64"),
])
def test_names_resolve_in_any_case(fn, given, canonical):
    assert fn(given) == canonical


@pytest.mark.parametrize("fn, given", [
    (hierarchy.allocation_state, "Enable"),
    (hierarchy.hypervisor_type, "Hyperv"),
    (hierarchy.cluster_type, ""),
    (hierarchy.managed_state, "PrepareUnmanagedError"),
])
def test_unknown_names_are_parameter_errors(fn, given):
    with pytest.raises(InvalidParameterValue):
        fn(given)


# --- pods ----------------------------------------------------------------------------


def test_create_pod_records_range_and_event(run, zone):
    pod = make_pod(run, zone)
    assert (pod.start_ip, pod.end_ip, pod.allocation_state) == ("10.0.0.10", "10.0.0.254", "Enabled")
    events = run(lambda ctx: ctx.session.execute(select(Event.type).where(Event.resource_uuid == pod.uuid)).scalars().all())
    assert events == ["POD.CREATE"]


def test_pod_cidr_overlap_follows_check_pod_cidrs(run, zone):
    make_pod(run, zone, name="p1", gateway="10.0.0.1", netmask="255.255.0.0")
    with pytest.raises(InvalidParameterValue) as e:
        make_pod(run, zone, name="p2", gateway="10.0.5.1", netmask="255.255.255.0", start_ip="10.0.5.10")
    assert "overlaps with the CIDR 10.0.0.0/16 of pod p1" in e.value.text
    assert run(lambda ctx: ctx.session.execute(select(Pod.name).where(Pod.name == "p2")).first()) is None
    run(lambda ctx: ctx.settings.set_global("check.pod.cidrs", "false"))
    pod = make_pod(run, zone, name="p2", gateway="10.0.5.1", netmask="255.255.255.0", start_ip="10.0.5.10")
    assert pod.end_ip == "10.0.5.254"


def test_update_pod_keeps_range_and_checks_it(run, zone):
    pod = make_pod(run, zone)
    moved = run(lambda ctx: ctx.hierarchy.update_pod(ctx.session.merge(pod), gateway="10.0.0.2", allocation="disabled"))
    assert (moved.gateway, moved.start_ip, moved.end_ip, moved.allocation_state) == (
        "10.0.0.2", "10.0.0.10", "10.0.0.254", "Disabled")
    with pytest.raises(InvalidParameterValue, match="The start address of the IP range is not in the CIDR subnet."):
        run(lambda ctx: ctx.hierarchy.update_pod(ctx.session.merge(pod), gateway="10.0.1.1"))


def test_delete_pod_guards(run, zone):
    pod = make_pod(run, zone)
    cluster = make_cluster(run, zone, pod)
    with pytest.raises(CloudRuntimeError, match="^The pod cannot be deleted because there are clusters in this pod.$"):
        run(lambda ctx: ctx.hierarchy.delete_pod(ctx.session.merge(pod)))
    run(lambda ctx: ctx.session.add(Host(name="h1", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                                         hypervisor="KVM", url="http://h1")))
    with pytest.raises(CloudRuntimeError, match="^The pod cannot be deleted because there are servers in this pod.$"):
        run(lambda ctx: ctx.hierarchy.delete_pod(ctx.session.merge(pod)))


# --- clusters --------------------------------------------------------------------------


def test_cluster_ratios_snapshot_the_global_factors(run, zone):
    pod = make_pod(run, zone)
    first = make_cluster(run, zone, pod, name="c1")
    run(lambda ctx: ctx.settings.set_global("cpu.overprovisioning.factor", "4"))
    run(lambda ctx: ctx.settings.set_global("mem.overprovisioning.factor", "2.5"))
    second = make_cluster(run, zone, pod, name="c2")
    run(lambda ctx: ctx.settings.set_global("cpu.overprovisioning.factor", "1"))

    def ratios(cluster):
        return run(lambda ctx: {d.name: d.value for d in ctx.session.merge(cluster).details})

    assert ratios(first) == {"cpuOvercommitRatio": "1.0", "memoryOvercommitRatio": "1.0"}
    assert ratios(second) == {"cpuOvercommitRatio": "4.0", "memoryOvercommitRatio": "2.5"}


def test_cluster_name_unique_per_pod(run, zone):
    pod = make_pod(run, zone)
    make_cluster(run, zone, pod, name="c1")
    with pytest.raises(CloudRuntimeError) as e:
        make_cluster(run, zone, pod, name="C1")
    assert e.value.text == "Unable to create cluster C1 in pod and data center with specified ids"
    assert e.value.uuid_list[0] == {"uuid": pod.uuid, "description": "podId"}
    other = make_pod(run, zone, name="p2", gateway="10.1.0.1", start_ip="10.1.0.10")
    assert make_cluster(run, zone, other, name="c1").pod_id == other.id


def test_cluster_pod_must_belong_to_zone(run, zone):
    pod = make_pod(run, zone)
    other_zone = run(lambda ctx: ctx.hierarchy.create_zone(name="z2", dns1="8.8.8.8", network_type="Basic"))
    with pytest.raises(InvalidParameterValue) as e:
        make_cluster(run, other_zone, pod)
    assert e.value.text == "Pod with specified id doesn't belong to the zone %s" % other_zone.uuid
    assert run(lambda ctx: ctx.session.execute(select(Cluster.id)).first()) is None


def test_delete_cluster_guards(run, zone):
    pod = make_pod(run, zone)
    cluster = make_cluster(run, zone, pod)
    pool = run(lambda ctx: _add(ctx, StoragePool(name="ps", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                                                 pool_type="NetworkFilesystem", host_address="127.0.0.1",
                                                 path="/x", url="nfs://127.0.0.1/x")))
    with pytest.raises(CloudRuntimeError) as e:
        run(lambda ctx: ctx.hierarchy.delete_cluster(ctx.session.merge(cluster)))
    assert e.value.text == "Cluster: %s cannot be removed. Cluster still has storage pools" % cluster.uuid
    host = run(lambda ctx: _add(ctx, Host(name="h1", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                                          hypervisor="KVM", url="http://h1")))
    with pytest.raises(CloudRuntimeError) as e:
        run(lambda ctx: ctx.hierarchy.delete_cluster(ctx.session.merge(cluster)))
    assert e.value.text == "Cluster: %s cannot be removed. Cluster still has hosts" % cluster.uuid
    # Removed hosts and pools no longer hold the cluster.
    run(lambda ctx: [setattr(ctx.session.merge(row), "removed", hierarchy._now()) for row in (host, pool)])
    run(lambda ctx: ctx.hierarchy.delete_cluster(ctx.session.merge(cluster)))
    assert run(lambda ctx: ctx.session.get(Cluster, cluster.id).removed) is not None


def _add(ctx, row):
    ctx.session.add(row)
    ctx.session.flush()
    return row
