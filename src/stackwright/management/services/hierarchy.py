"""The infrastructure hierarchy: zones, pods and clusters, with their allocation states.

Services follow three phases: validate the request, check the current state without
writing, then change everything in the caller's single transaction.
"""

import ipaddress

import netaddr
from sqlalchemy import func, select

from .. import values
from ..errors import CloudRuntimeError, InvalidParameterValue
from ..formatting import ratio
from ..persistence.models import (
    Cluster,
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

ALLOCATION_STATES = ("Enabled", "Disabled")
HYPERVISORS = ("KVM", "Simulator")
CLUSTER_TYPES = ("CloudManaged", "ExternalManaged")
# PrepareUnmanaged and PrepareUnmanagedError are transitions the engine passes through, not targets.
MANAGED_STATES = ("Managed", "Unmanaged")
ARCHITECTURES = ("x86_64", "aarch64")


def allocation_state(value):
    """'enabled' -> 'Enabled'; anything else is CloudStack's 431."""
    return choose(value, ALLOCATION_STATES, "Unable to resolve Allocation State '%s' to a supported state" % value)


def check_ip(value, what):
    if value is None or value == "":
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidParameterValue("Please enter a valid IP address for %s" % what) from None
    return value


def check_ip6(value, what):
    if value is None or value == "":
        return value
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidParameterValue("Please enter a valid IPv6 address for %s" % what) from None
    return value


def check_cidr(value):
    if value is None or value == "":
        return value
    try:
        return str(values.parse_cidr(value))
    except ValueError:
        raise InvalidParameterValue("Please enter a valid guest cidr") from None


def choose(value, choices, error):
    """Match `value` against `choices` in any case; the canonical spelling, else `error`."""
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise InvalidParameterValue(error)


def hypervisor_type(value):
    return choose(value, HYPERVISORS, "Unable to resolve hypervisor type '%s'; supported hypervisors "
                  "are %s" % (value, ", ".join(HYPERVISORS)))


def cluster_type(value):
    return choose(value, CLUSTER_TYPES, "Unable to resolve %s to a supported cluster type; "
                  "use %s" % (value, " or ".join(CLUSTER_TYPES)))


def managed_state(value):
    return choose(value, MANAGED_STATES, "Unable to resolve Managed State '%s' to a supported "
                  "state; use %s" % (value, " or ".join(MANAGED_STATES)))


def architecture(value):
    return choose(value, ARCHITECTURES, "Unable to resolve arch %s to a supported CPU "
                  "architecture; use %s" % (value, " or ".join(ARCHITECTURES)))


def _ipv4(value):
    return netaddr.IPAddress(value) if netaddr.valid_ipv4(value or "", flags=netaddr.INET_PTON) else None


def pod_subnet(gateway, netmask):
    """The pod's CIDR (an IPNetwork) from its gateway and netmask."""
    gw = _ipv4(gateway)
    if gw is None:
        raise InvalidParameterValue("The gateway is invalid")
    mask = _ipv4(netmask)
    # A /31 or /32 leaves no room for a gateway beside an address range.
    if mask is None or not mask.is_netmask() or mask.netmask_bits() > 30:
        raise InvalidParameterValue("The netmask is invalid")
    subnet = netaddr.IPNetwork("%s/%d" % (gw, mask.netmask_bits())).cidr
    if gw in (subnet.network, subnet.broadcast):
        raise InvalidParameterValue("The gateway is not in the CIDR subnet.")
    return subnet


def pod_range(subnet, gateway, start_ip, end_ip):
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


def active(model):
    return select(model).where(model.removed.is_(None))


class HierarchyService:
    def __init__(self, ctx):
        self.ctx = ctx
        self.session = ctx.session

    # --- zones ---------------------------------------------------------------------

    def zone_by_name(self, name):
        return self.session.execute(
            active(Zone).where(func.lower(Zone.name) == name.lower())
        ).scalars().first()

    def create_zone(self, *, name, dns1, network_type, dns2=None, internal_dns1=None,
                    internal_dns2=None, ip6_dns1=None, ip6_dns2=None, guest_cidr=None,
                    network_domain=None, domain=None, allocation=None,
                    security_groups=False, local_storage=False):
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
        self.ctx.event("ZONE.CREATE", "Successfully created zone %s" % name, zone.uuid)
        return zone

    def update_zone(self, zone, changes):
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
        self.ctx.event("ZONE.EDIT", "Successfully updated zone %s" % zone.name, zone.uuid)
        return zone

    def _enable_zone(self, zone):
        reason = self.ctx.networks.zone_enable_blocker(zone)
        if reason:
            raise InvalidParameterValue("Cannot enable this Zone since: %s" % reason)
        zone.allocation_state = "Enabled"

    def delete_zone(self, zone):
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
                    "The zone cannot be deleted because there are %s in this zone." % label
                )
        zone.removed = _now()
        self.ctx.event("ZONE.DELETE", "Successfully deleted zone %s" % zone.name, zone.uuid)

    # --- pods ----------------------------------------------------------------------

    def pod_by_name(self, zone, name):
        return self.session.execute(
            active(Pod).where(Pod.zone_id == zone.id, func.lower(Pod.name) == name.lower())
        ).scalars().first()

    def _check_pod_name(self, zone, name):
        if self.pod_by_name(zone, name) is not None:
            raise InvalidParameterValue(
                "A pod with name: %s already exists in zone %s. Please specify a different pod name. "
                % (name, zone.uuid)
            )

    def _check_pod_cidr(self, zone, subnet, pod=None):
        """Pods of one zone live in separate subnets, unless check.pod.cidrs is false."""
        if not self.ctx.config.typed("check.pod.cidrs"):
            return
        others = self.session.execute(active(Pod).where(Pod.zone_id == zone.id)).scalars()
        for other in others:
            if pod is not None and other.id == pod.id:
                continue
            other_subnet = netaddr.IPNetwork("%s/%s" % (other.gateway, other.netmask)).cidr
            if subnet.first <= other_subnet.last and other_subnet.first <= subnet.last:
                raise InvalidParameterValue(
                    "The pod CIDR %s overlaps with the CIDR %s of pod %s in zone %s; give every pod "
                    "its own subnet, or set check.pod.cidrs to false" % (subnet, other_subnet, other.name, zone.name)
                )

    def create_pod(self, *, zone, name, gateway, netmask, start_ip, end_ip=None, allocation=None):
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
        self.ctx.event("POD.CREATE", "Successfully created pod %s in zone %s" % (name, zone.name), pod.uuid)
        return pod

    def update_pod(self, pod, *, name=None, gateway=None, netmask=None, allocation=None):
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
        self.ctx.event("POD.EDIT", "Successfully updated pod %s" % pod.name, pod.uuid)
        return pod

    def delete_pod(self, pod):
        self._live(pod, "pod")
        for model, label in ((Host, "servers"), (Cluster, "clusters")):
            if self._has_live(model, model.pod_id == pod.id):
                raise CloudRuntimeError("The pod cannot be deleted because there are %s in this pod." % label)
        pod.removed = _now()
        self.ctx.event("POD.DELETE", "Successfully deleted pod %s" % pod.name, pod.uuid)

    # --- clusters ------------------------------------------------------------------

    def cluster_by_name(self, pod, name):
        return self.session.execute(
            active(Cluster).where(Cluster.pod_id == pod.id, func.lower(Cluster.name) == name.lower())
        ).scalars().first()

    def add_cluster(self, *, zone, pod, name, hypervisor, kind, allocation=None, url=None, arch=None):
        if zone.removed is not None:
            raise InvalidParameterValue("Can't find zone by id %s" % zone.uuid)
        if pod.removed is not None:
            raise InvalidParameterValue("Can't find pod with specified podId %s" % pod.uuid)
        if pod.zone_id != zone.id:
            raise InvalidParameterValue(
                "Pod with specified id doesn't belong to the zone %s" % zone.uuid,
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
                "Unable to create cluster %s in pod and data center with specified ids" % name,
                uuid_list=[{"uuid": pod.uuid, "description": "podId"},
                           {"uuid": zone.uuid, "description": "dcId"}],
            )
        cluster = Cluster(name=name, pod_id=pod.id, zone_id=zone.id, hypervisor=hypervisor,
                          cluster_type=kind, allocation_state=state, managed_state="Managed",
                          arch=arch, url=url or None)
        # The over-commit ratios are a snapshot of the global factors at creation time.
        for config_name, detail in CLUSTER_DETAIL_OF.items():
            factor = self.ctx.configuration.global_value(config_name) or config_key(config_name).default
            cluster.set_detail(detail, ratio(factor))
        self.session.add(cluster)
        self.session.flush()
        self.ctx.event("CLUSTER.CREATE", "Successfully added cluster %s to pod %s" % (name, pod.name), cluster.uuid)
        return cluster

    def update_cluster(self, cluster, *, name=None, hypervisor=None, kind=None, allocation=None,
                       managed=None, arch=None):
        self._live(cluster, "cluster")
        hypervisor = hypervisor_type(hypervisor) if hypervisor else None
        kind = cluster_type(kind) if kind else None
        state = allocation_state(allocation) if allocation else None
        managed = managed_state(managed) if managed else None
        arch = architecture(arch) if arch else None
        if name and name.lower() != cluster.name.lower() and self.cluster_by_name(cluster.pod, name) is not None:
            raise InvalidParameterValue(
                "A cluster with name %s already exists in pod %s; choose another name" % (name, cluster.pod.name)
            )
        if hypervisor and hypervisor != cluster.hypervisor and self._has_live(Host, Host.cluster_id == cluster.id):
            raise InvalidParameterValue(
                "Cannot change the hypervisor of cluster %s from %s to %s while it has hosts; "
                "remove its hosts first" % (cluster.name, cluster.hypervisor, hypervisor)
            )
        for attr, value in (("name", name or None), ("hypervisor", hypervisor), ("cluster_type", kind),
                            ("allocation_state", state), ("managed_state", managed), ("arch", arch)):
            if value is not None:
                setattr(cluster, attr, value)
        self.session.flush()
        self.ctx.event("CLUSTER.EDIT", "Successfully updated cluster %s" % cluster.name, cluster.uuid)
        return cluster

    def delete_cluster(self, cluster):
        self._live(cluster, "cluster")
        for model, label in ((Host, "hosts"), (StoragePool, "storage pools")):
            if self._has_live(model, model.cluster_id == cluster.id):
                raise CloudRuntimeError(
                    "Cluster: %s cannot be removed. Cluster still has %s" % (cluster.uuid, label)
                )
        cluster.removed = _now()
        self.ctx.event("CLUSTER.DELETE", "Successfully deleted cluster %s" % cluster.name, cluster.uuid)

    # --- shared ----------------------------------------------------------------------

    def _has_live(self, model, condition):
        return self.session.execute(
            select(model.id).where(condition, model.removed.is_(None)).limit(1)
        ).first() is not None

    def _live(self, row, what):
        if row.removed is not None:
            raise InvalidParameterValue("Unable to find %s by id %s" % (what, row.uuid))
        return row


def _now():
    from ..persistence.models import utcnow

    return utcnow()
