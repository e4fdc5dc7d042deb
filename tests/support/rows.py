"""Rows of the zone -> pod -> cluster -> host hierarchy written straight into a test's database,
for tests of the engine's parts that run without its API."""

from __future__ import annotations

from stackwright.management.persistence.models import Cluster, Host, Pod, Zone

MiB = 1 << 20


def zone_and_pod(session, zone="z", pod="p"):
    """An Advanced zone and a pod in it (10.0.0.0/24), flushed so their ids are known."""
    zone_row = Zone(name=zone, network_type="Advanced", details={})
    session.add(zone_row)
    session.flush()
    pod_row = Pod(name=pod, zone_id=zone_row.id, gateway="10.0.0.1", netmask="255.255.255.0",
                  start_ip="10.0.0.10", end_ip="10.0.0.20")
    session.add(pod_row)
    session.flush()
    return zone_row, pod_row


def simulator_cluster_with_host(db, **host_fields):
    """A Simulator cluster with one Disconnected host `h0` (guid `sim-0`, 3 CPUs, 3 GiB), whose
    simulated agent the engine runs; `host_fields` add to or replace the host's columns.
    Returns the cluster's uuid."""
    with db.transaction() as s:
        zone, pod = zone_and_pod(s)
        cluster = Cluster(name="c", pod_id=pod.id, zone_id=zone.id, hypervisor="Simulator")
        s.add(cluster)
        s.flush()
        fields = dict(name="h0", guid="sim-0", zone_id=zone.id, pod_id=pod.id, cluster_id=cluster.id,
                      hypervisor="Simulator", url="http://sim/c/h0?cpus=3&cpuspeed=1500&memory=%d" % (3072 * MiB),
                      ip_address="172.16.0.5", state="Disconnected", resource_state="Enabled", details={})
        fields.update(host_fields)
        s.add(Host(**fields))
        return cluster.uuid
