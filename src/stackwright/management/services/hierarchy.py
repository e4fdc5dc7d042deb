"""The infrastructure hierarchy: zones, pods and clusters, with their allocation states.

Services follow three phases: validate the request, check the current state without
writing, then change everything in the caller's single transaction.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import netaddr
from sqlalchemy import bindparam, func, select

from .. import values
from ..errors import CloudRuntimeError, InvalidParameterValue
from ..formatting import ratio
from ..persistence.models import (
    Cluster,
    Domain,
    Entity,
    Host,
    ImageStore,
    PhysicalNetwork,
    Pod,
    StoragePool,
    VmInstance,
    Volume,
    Zone,
)
from .configuration import CLUSTER_DETAIL_OF, key as config_key
from .queries import NOCASE, ROW, ROWS, Filter, filtered, keyword, page

if TYPE_CHECKING:
    from collections.abc import Sequence

    from types import SimpleNamespace
    from ..services.queries import Page
    from sqlalchemy import ColumnElement, Select

    from ..context import Context

E = TypeVar("E", bound=Entity)

ALLOCATION_STATES = ("Enabled", "Disabled")
HYPERVISORS = ("KVM", "Simulator")
CLUSTER_TYPES = ("CloudManaged", "ExternalManaged")
# PrepareUnmanaged and PrepareUnmanagedError are transitions the engine passes through, not targets.
MANAGED_STATES = ("Managed", "Unmanaged")
ARCHITECTURES = ("x86_64", "aarch64")


def allocation_state(value: str) -> str:
    """'enabled' -> 'Enabled'; anything else is CloudStack's 431."""
    return choose(value, ALLOCATION_STATES, f"Unable to resolve Allocation State '{value}' to a supported state")


def check_ip(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidParameterValue(f"Please enter a valid IP address for {what}") from None
    return value


def check_ip6(value: str | None, what: str) -> str | None:
    if value is None or value == "":
        return value
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidParameterValue(f"Please enter a valid IPv6 address for {what}") from None
    return value


def check_cidr(value: str | None) -> str | None:
    if value is None or value == "":
        return value
    try:
        return str(values.parse_cidr(value))
    except ValueError:
        raise InvalidParameterValue("Please enter a valid guest cidr") from None


def choose(value: str, choices: Iterable[str], error: str) -> str:
    """Match `value` against `choices` in any case; the canonical spelling, else `error`."""
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise InvalidParameterValue(error)


def hypervisor_type(value: str) -> str:
    return choose(value, HYPERVISORS, f"Unable to resolve hypervisor type '{value}'; supported hypervisors "
                  f"are {', '.join(HYPERVISORS)}")


def cluster_type(value: str) -> str:
    return choose(value, CLUSTER_TYPES, f"Unable to resolve {value} to a supported cluster type; "
                  f"use {' or '.join(CLUSTER_TYPES)}")


def managed_state(value: str) -> str:
    return choose(value, MANAGED_STATES, f"Unable to resolve Managed State '{value}' to a supported "
                  f"state; use {' or '.join(MANAGED_STATES)}")


def architecture(value: str) -> str:
    return choose(value, ARCHITECTURES, f"Unable to resolve arch {value} to a supported CPU "
                  f"architecture; use {' or '.join(ARCHITECTURES)}")


def _ipv4(value: str | None) -> netaddr.IPAddress | None:
    return netaddr.IPAddress(value) if netaddr.valid_ipv4(value or "", flags=netaddr.INET_PTON) else None


def pod_subnet(gateway: str | None, netmask: str | None) -> netaddr.IPNetwork:
    """The pod's CIDR (an IPNetwork) from its gateway and netmask."""
    gw = _ipv4(gateway)
    if gw is None:
        raise InvalidParameterValue("The gateway is invalid")
    mask = _ipv4(netmask)
    # A /31 or /32 leaves no room for a gateway beside an address range.
    if mask is None or not mask.is_netmask() or mask.netmask_bits() > 30:
        raise InvalidParameterValue("The netmask is invalid")
    subnet = netaddr.IPNetwork(f"{gw}/{mask.netmask_bits()}").cidr
    if gw in (subnet.network, subnet.broadcast):
        raise InvalidParameterValue("The gateway is not in the CIDR subnet.")
    return subnet


def pod_range(subnet: netaddr.IPNetwork, gateway: str, start_ip: str | None,
              end_ip: str | None) -> tuple[str, str]:
    """Validate the pod's private IP range inside `subnet`; returns (start, end) as strings.

    Without an end address the range runs to the subnet's last usable address.
    """
    start = _ipv4(start_ip)
    if start is None:
        raise InvalidParameterValue("The start address of the IP range is not a valid IP address.")
    if end_ip:
        end = _ipv4(end_ip)
        if end is None:
            raise InvalidParameterValue("The end address of the IP range is not a valid IP address.")
    else:
        end = subnet[-2]
    usable = netaddr.IPRange(subnet[1], subnet[-2])
    if start not in usable:
        raise InvalidParameterValue("The start address of the IP range is not in the CIDR subnet.")
    if end not in usable:
        raise InvalidParameterValue("The end address of the IP range is not in the CIDR subnet.")
    if start > end:
        raise InvalidParameterValue("The start IP address must have a lower value than the end IP address.")
    if start <= netaddr.IPAddress(gateway) <= end:
        raise InvalidParameterValue("The gateway shouldn't overlap start/end IP addresses")
    return str(start), str(end)


def active(model: type[E]) -> Select[tuple[E]]:
    return select(model).where(model.removed.is_(None))


# The live pods of a zone, as the pod CIDR check reads them.
_POD_SUBNETS = select(Pod.id, Pod.name, Pod.gateway, Pod.netmask).where(
    Pod.removed.is_(None), Pod.zone_id == bindparam("zone"))


class HierarchyService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    # --- zones ---------------------------------------------------------------------

    def zone_by_name(self, name: str) -> Zone | None:
        return self.session.execute(
            active(Zone).where(func.lower(Zone.name) == name.lower())
        ).scalars().first()

    def create_zone(self, *, name: str, dns1: str, network_type: str, dns2: str | None = None,
                    internal_dns1: str | None = None, internal_dns2: str | None = None,
                    ip6_dns1: str | None = None, ip6_dns2: str | None = None,
                    guest_cidr: str | None = None, network_domain: str | None = None,
                    domain: Domain | None = None, allocation: str | None = None,
                    security_groups: bool = False, local_storage: bool = False) -> Zone:
        kind = {"basic": "Basic", "advanced": "Advanced"}.get(network_type.lower())
        if kind is None:
            raise InvalidParameterValue("Invalid zone type; only Advanced and Basic values are supported")
        check_ip(dns1, "DNS1")
        check_ip(dns2, "DNS2")
        check_ip(internal_dns1, "internal DNS1")
        check_ip(internal_dns2, "internal DNS2")
        check_ip6(ip6_dns1, "IPv6 DNS1")
        check_ip6(ip6_dns2, "IPv6 DNS2")
        if guest_cidr and kind == "Basic":
            raise InvalidParameterValue("guestcidraddress can only be set for Advanced zones")
        guest_cidr = check_cidr(guest_cidr)
        state = allocation_state(allocation) if allocation else "Disabled"
        if self.zone_by_name(name) is not None:
            raise InvalidParameterValue(
                "A zone with that name already exists. Please specify a unique zone name."
            )
        zone = Zone(
            name=name, dns1=dns1, dns2=dns2, internal_dns1=internal_dns1 or dns1,
            internal_dns2=internal_dns2, ip6_dns1=ip6_dns1, ip6_dns2=ip6_dns2,
            guest_cidr=guest_cidr, network_domain=network_domain,
            domain_id=domain.id if domain is not None else None,
            network_type=kind,
            # Basic zones always isolate guests with security groups.
            security_groups_enabled=True if kind == "Basic" else bool(security_groups),
            allocation_state="Disabled", local_storage_enabled=bool(local_storage),
            details={},
        )
        self.session.add(zone)
        self.session.flush()
        if state == "Enabled":
            self._enable_zone(zone)
        self.ctx.event("ZONE.CREATE", f"Successfully created zone {name}", zone.uuid)
        return zone

    def update_zone(self, zone: Zone, changes: dict[str, Any]) -> Zone:
        self._live(zone, "zone")
        if "name" in changes and changes["name"].lower() != zone.name.lower():
            if self.zone_by_name(changes["name"]) is not None:
                raise InvalidParameterValue(
                    "A zone with that name already exists. Please specify a unique zone name."
                )
        for field, what in (("dns1", "DNS1"), ("dns2", "DNS2"), ("internal_dns1", "internal DNS1"),
                            ("internal_dns2", "internal DNS2")):
            if field in changes:
                check_ip(changes[field], what)
        for field, what in (("ip6_dns1", "IPv6 DNS1"), ("ip6_dns2", "IPv6 DNS2")):
            if field in changes:
                check_ip6(changes[field], what)
        if "guest_cidr" in changes:
            changes["guest_cidr"] = check_cidr(changes["guest_cidr"])
        state = changes.pop("allocation_state", None)
        if state is not None:
            state = allocation_state(state)
        details = changes.pop("details", None)
        for field, value in changes.items():
            if field == "network_domain" and value == "":
                value = None
            setattr(zone, field, value)
        if details:
            merged = dict(zone.details or {})
            merged.update(details)
            zone.details = merged
        if state == "Enabled" and zone.allocation_state != "Enabled":
            self._enable_zone(zone)
        elif state == "Disabled":
            zone.allocation_state = "Disabled"
        self.session.flush()
        self.ctx.event("ZONE.EDIT", f"Successfully updated zone {zone.name}", zone.uuid)
        return zone

    def _enable_zone(self, zone: Zone) -> None:
        reason = self.ctx.networks.zone_enable_blocker(zone)
        if reason:
            raise InvalidParameterValue(f"Cannot enable this Zone since: {reason}")
        zone.allocation_state = "Enabled"

    def delete_zone(self, zone: Zone) -> None:
        self._live(zone, "zone")
        for model, label in (
            (Host, "servers"),
            (Pod, "pods"),
            (PhysicalNetwork, "physical networks"),
            (ImageStore, "Secondary storages"),
            (StoragePool, "storage pools"),
            (VmInstance, "virtual machines"),
            (Volume, "storage volumes"),
        ):
            if self._has_live(model, model.zone_id == zone.id):
                raise CloudRuntimeError(
                    f"The zone cannot be deleted because there are {label} in this zone."
                )
        zone.removed = _now()
        self.ctx.event("ZONE.DELETE", f"Successfully deleted zone {zone.name}", zone.uuid)

    # --- pods ----------------------------------------------------------------------

    def pod_by_name(self, zone: Zone, name: str) -> Pod | None:
        return self.session.execute(
            active(Pod).where(Pod.zone_id == zone.id, func.lower(Pod.name) == name.lower())
        ).scalars().first()

    def _check_pod_name(self, zone: Zone, name: str) -> None:
        if self.pod_by_name(zone, name) is not None:
            raise InvalidParameterValue(
                f"A pod with name: {name} already exists in zone {zone.uuid}. Please specify a different pod name. "
            )

    def _check_pod_cidr(self, zone: Zone, subnet: netaddr.IPNetwork, pod: Pod | None = None) -> None:
        """Pods of one zone live in separate subnets, unless check.pod.cidrs is false."""
        if not self.ctx.settings.typed("check.pod.cidrs"):
            return
        # The columns the check reads, not whole pods (each with its zone): this runs inside
        # every createPod's write transaction.
        others = self.session.execute(_POD_SUBNETS, {"zone": zone.id})
        for other_id, other_name, gateway, netmask in others:
            if pod is not None and other_id == pod.id:
                continue
            other_subnet = netaddr.IPNetwork(f"{gateway}/{netmask}").cidr
            if subnet.first <= other_subnet.last and other_subnet.first <= subnet.last:
                raise InvalidParameterValue(
                    f"The pod CIDR {subnet} overlaps with the CIDR {other_subnet} of pod {other_name} "
                    f"in zone {zone.name}; give every pod its own subnet, or set check.pod.cidrs to false"
                )

    def create_pod(self, *, zone: Zone, name: str, gateway: str, netmask: str, start_ip: str,
                   end_ip: str | None = None, allocation: str | None = None) -> Pod:
        if zone.removed is not None:
            raise InvalidParameterValue("Please specify a valid zone.")
        subnet = pod_subnet(gateway, netmask)
        start, end = pod_range(subnet, gateway, start_ip, end_ip)
        state = allocation_state(allocation) if allocation else "Enabled"
        self._check_pod_name(zone, name)
        self._check_pod_cidr(zone, subnet)
        pod = Pod(name=name, zone_id=zone.id, gateway=gateway, netmask=netmask,
                  start_ip=start, end_ip=end, allocation_state=state)
        self.session.add(pod)
        self.session.flush()
        self.ctx.event("POD.CREATE", f"Successfully created pod {name} in zone {zone.name}", pod.uuid)
        return pod

    def update_pod(self, pod: Pod, *, name: str | None = None, gateway: str | None = None,
                   netmask: str | None = None, allocation: str | None = None) -> Pod:
        """Rename, move to another gateway/netmask or change the allocation state of `pod`.

        The existing IP range must still fit the new subnet; ranges themselves are not edited
        here (as in current CloudStack releases).
        """
        self._live(pod, "pod")
        zone = pod.zone
        new_gateway = gateway or pod.gateway
        new_netmask = netmask or pod.netmask
        subnet = pod_subnet(new_gateway, new_netmask)
        pod_range(subnet, new_gateway, pod.start_ip, pod.end_ip)
        state = allocation_state(allocation) if allocation else pod.allocation_state
        if name and name.lower() != pod.name.lower():
            self._check_pod_name(zone, name)
        if (new_gateway, new_netmask) != (pod.gateway, pod.netmask):
            self._check_pod_cidr(zone, subnet, pod)
        pod.name = name or pod.name
        pod.gateway, pod.netmask, pod.allocation_state = new_gateway, new_netmask, state
        self.session.flush()
        self.ctx.event("POD.EDIT", f"Successfully updated pod {pod.name}", pod.uuid)
        return pod

    def delete_pod(self, pod: Pod) -> None:
        self._live(pod, "pod")
        for model, label in ((Host, "servers"), (Cluster, "clusters")):
            if self._has_live(model, model.pod_id == pod.id):
                raise CloudRuntimeError(f"The pod cannot be deleted because there are {label} in this pod.")
        pod.removed = _now()
        self.ctx.event("POD.DELETE", f"Successfully deleted pod {pod.name}", pod.uuid)

    # --- clusters ------------------------------------------------------------------

    def cluster_by_name(self, pod: Pod, name: str) -> Cluster | None:
        return self.session.execute(
            active(Cluster).where(Cluster.pod_id == pod.id, func.lower(Cluster.name) == name.lower())
        ).scalars().first()

    def add_cluster(self, *, zone: Zone, pod: Pod, name: str, hypervisor: str, kind: str,
                    allocation: str | None = None, url: str | None = None, arch: str | None = None) -> Cluster:
        if zone.removed is not None:
            raise InvalidParameterValue(f"Can't find zone by id {zone.uuid}")
        if pod.removed is not None:
            raise InvalidParameterValue(f"Can't find pod with specified podId {pod.uuid}")
        if pod.zone_id != zone.id:
            raise InvalidParameterValue(
                f"Pod with specified id doesn't belong to the zone {zone.uuid}",
                uuid_list=[{"uuid": pod.uuid, "description": "podId"},
                           {"uuid": zone.uuid, "description": "dcId"}],
            )
        if not name:
            raise InvalidParameterValue("Please specify cluster name")
        hypervisor = hypervisor_type(hypervisor)
        kind = cluster_type(kind) if kind else "CloudManaged"
        state = allocation_state(allocation) if allocation else "Enabled"
        arch = architecture(arch) if arch else "x86_64"
        if self.cluster_by_name(pod, name) is not None:
            # CloudStack learns this from the (pod, name) unique key, hence the vague 530.
            raise CloudRuntimeError(
                f"Unable to create cluster {name} in pod and data center with specified ids",
                uuid_list=[{"uuid": pod.uuid, "description": "podId"},
                           {"uuid": zone.uuid, "description": "dcId"}],
            )
        cluster = Cluster(name=name, pod_id=pod.id, zone_id=zone.id, hypervisor=hypervisor,
                          cluster_type=kind, allocation_state=state, managed_state="Managed",
                          arch=arch, url=url or None)
        # The over-commit ratios are a snapshot of the global factors at creation time.
        for config_name, detail in CLUSTER_DETAIL_OF.items():
            factor = self.ctx.settings.global_value(config_name) or config_key(config_name).default
            cluster.set_detail(detail, ratio(factor))
        self.session.add(cluster)
        self.session.flush()
        self.ctx.event("CLUSTER.CREATE", f"Successfully added cluster {name} to pod {pod.name}", cluster.uuid)
        return cluster

    def update_cluster(self, cluster: Cluster, *, name: str | None = None, hypervisor: str | None = None,
                       kind: str | None = None, allocation: str | None = None, managed: str | None = None,
                       arch: str | None = None) -> Cluster:
        self._live(cluster, "cluster")
        hypervisor = hypervisor_type(hypervisor) if hypervisor else None
        kind = cluster_type(kind) if kind else None
        state = allocation_state(allocation) if allocation else None
        managed = managed_state(managed) if managed else None
        arch = architecture(arch) if arch else None
        if name and name.lower() != cluster.name.lower() and self.cluster_by_name(cluster.pod, name) is not None:
            raise InvalidParameterValue(
                f"A cluster with name {name} already exists in pod {cluster.pod.name}; choose another name"
            )
        if hypervisor and hypervisor != cluster.hypervisor and self._has_live(Host, Host.cluster_id == cluster.id):
            raise InvalidParameterValue(
                f"Cannot change the hypervisor of cluster {cluster.name} from {cluster.hypervisor} "
                f"to {hypervisor} while it has hosts; remove its hosts first"
            )
        for attr, value in (("name", name or None), ("hypervisor", hypervisor), ("cluster_type", kind),
                            ("allocation_state", state), ("managed_state", managed), ("arch", arch)):
            if value is not None:
                setattr(cluster, attr, value)
        self.session.flush()
        self.ctx.event("CLUSTER.EDIT", f"Successfully updated cluster {cluster.name}", cluster.uuid)
        return cluster

    def delete_cluster(self, cluster: Cluster) -> None:
        self._live(cluster, "cluster")
        for model, label in ((Host, "hosts"), (StoragePool, "storage pools")):
            if self._has_live(model, model.cluster_id == cluster.id):
                raise CloudRuntimeError(
                    f"Cluster: {cluster.uuid} cannot be removed. Cluster still has {label}"
                )
        cluster.removed = _now()
        self.ctx.event("CLUSTER.DELETE", f"Successfully deleted cluster {cluster.name}", cluster.uuid)

    # --- shared ----------------------------------------------------------------------

    def _has_live(self, model: type[Entity], condition: ColumnElement[bool]) -> bool:
        return self.session.execute(
            select(model.id).where(condition, model.removed.is_(None)).limit(1)
        ).first() is not None

    def _live(self, row: E, what: str) -> E:
        if row.removed is not None:
            raise InvalidParameterValue(f"Unable to find {what} by id {row.uuid}")
        return row

    # --- reads: listZones, listPods, listClusters, listHypervisors -----------------------

    def list_zones(self, p: SimpleNamespace) -> Page:
        q = filtered(active(Zone), ZONE_FILTERS, p)
        if not self.ctx.is_root_admin:
            q = q.where(Zone.allocation_state == "Enabled")
        return page(self.ctx, p, q, Zone.id)

    def list_pods(self, p: SimpleNamespace) -> Page:
        return page(self.ctx, p, filtered(active(Pod), POD_FILTERS, p), Pod.id)

    def list_clusters(self, p: SimpleNamespace) -> Page:
        return page(self.ctx, p, filtered(active(Cluster), CLUSTER_FILTERS, p), Cluster.id)

    def domain_name(self, domain_id: int) -> str | None:
        # Public zones (most of them) have no domain: no query for those.
        return self.session.get(Domain, domain_id).name if domain_id is not None else None

    def hypervisors_in(self, zone: Zone) -> Sequence[str]:
        """The hypervisor types of the live clusters of `zone`, sorted."""
        return self.session.execute(
            select(Cluster.hypervisor).where(Cluster.zone_id == zone.id, Cluster.removed.is_(None))
            .distinct().order_by(Cluster.hypervisor)
        ).scalars().all()


def _now() -> dt.datetime:
    from ..persistence.models import utcnow

    return utcnow()


ZONE_FILTERS = (
    Filter("id", Zone.id, ROW),
    Filter("ids", Zone.id, ROWS),
    Filter("name", Zone.name, NOCASE),
    Filter("networktype", Zone.network_type, NOCASE),
    Filter("domainid", Zone.domain_id, ROW),
    keyword(Zone.name, Zone.description),
)

POD_FILTERS = (
    Filter("id", Pod.id, ROW),
    Filter("name", Pod.name, NOCASE),
    Filter("zoneid", Pod.zone_id, ROW),
    Filter("allocationstate", Pod.allocation_state, NOCASE),
    keyword(Pod.name),
)

CLUSTER_FILTERS = (
    Filter("id", Cluster.id, ROW),
    Filter("zoneid", Cluster.zone_id, ROW),
    Filter("podid", Cluster.pod_id, ROW),
    Filter("name", Cluster.name, NOCASE),
    Filter("hypervisor", Cluster.hypervisor, NOCASE),
    Filter("clustertype", Cluster.cluster_type, NOCASE),
    Filter("allocationstate", Cluster.allocation_state, NOCASE),
    Filter("managedstate", Cluster.managed_state, NOCASE),
    Filter("arch", Cluster.arch, NOCASE),
    keyword(Cluster.name),
)
