"""Physical networks and their traffic types, with the KVM network label of each.

The label is the bridge name (e.g. cloudbr0) that agents attach guests and system traffic
to. A zone may only be enabled once it has a physical network carrying Management traffic
(and, for Advanced zones without security groups, Public traffic too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import CloudRuntimeError, InvalidParameterValue
from ..persistence.models import PhysicalNetwork, TrafficType, Zone, utcnow
from .hierarchy import choose
from .queries import NOCASE, ROW, Filter, filtered, keyword, page

if TYPE_CHECKING:
    from types import SimpleNamespace
    from ..services.queries import Page
    from ..context import Context

TRAFFIC_TYPES = ("Public", "Guest", "Management", "Storage")
# System traffic a zone routes through exactly one physical network (Guest may span several).
ZONE_WIDE_TRAFFIC = ("Management", "Public", "Storage")
ISOLATION_METHODS = ("VLAN", "VXLAN", "GRE", "L3", "STT", "BCF_SEGMENT", "SSP", "ODL", "L3VPN", "VCS")


def traffic_type_name(value: str) -> str:
    return choose(value, TRAFFIC_TYPES, f"Unable to resolve trafficType '{value}' to a supported value; "
                  f"use one of {', '.join(TRAFFIC_TYPES)}")


class NetworkService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.session = ctx.session

    def physical_networks(self, zone: Zone) -> Sequence[PhysicalNetwork]:
        return self.session.execute(
            select(PhysicalNetwork).where(PhysicalNetwork.zone_id == zone.id,
                                          PhysicalNetwork.removed.is_(None))
            .order_by(PhysicalNetwork.id)
        ).scalars().all()

    def traffic_types(self, network: PhysicalNetwork) -> Sequence[TrafficType]:
        return self.session.execute(
            select(TrafficType).where(TrafficType.physical_network_id == network.id,
                                      TrafficType.removed.is_(None))
            .order_by(TrafficType.id)
        ).scalars().all()

    def zone_traffic(self, zone: Zone) -> dict[str, TrafficType]:
        """{traffic type: TrafficType} over all physical networks of `zone`."""
        out: dict[str, TrafficType] = {}
        for network in self.physical_networks(zone):
            for tt in self.traffic_types(network):
                out.setdefault(tt.traffic_type, tt)
        return out

    def zone_enable_blocker(self, zone: Zone) -> str | None:
        """Why `zone` cannot be enabled yet, or None."""
        traffic = self.zone_traffic(zone)
        if not self.physical_networks(zone):
            return "No physical network is set up in the zone; create one with createPhysicalNetwork"
        if "Management" not in traffic:
            return ("No physical network in the zone carries Management traffic; add it with "
                    "addTrafficType traffictype=Management")
        if zone.network_type == "Advanced" and not zone.security_groups_enabled and "Public" not in traffic:
            return ("No physical network in the zone carries Public traffic, which an Advanced zone "
                    "without security groups needs; add it with addTrafficType traffictype=Public")
        if "Storage" not in traffic:
            # CloudStack adds Storage traffic next to Management automatically.
            management = traffic["Management"]
            self.session.add(TrafficType(
                physical_network_id=management.physical_network_id, traffic_type="Storage",
                kvm_label=management.kvm_label, xen_label=management.xen_label,
                vmware_label=management.vmware_label,
            ))
        return None

    def create_physical_network(self, *, zone: Zone, name: str, isolation_methods: Sequence[str] | None = None,
                                broadcast_domain_range: str | None = None, vlan: str | None = None,
                                tags: Sequence[str] | None = None,
                                network_speed: str | None = None) -> PhysicalNetwork:
        if zone.removed is not None:
            raise InvalidParameterValue("Please specify a valid zone.")
        methods = [choose(m, ISOLATION_METHODS,
                          f"Invalid isolation method {m}; use one of {', '.join(ISOLATION_METHODS)}")
                   for m in isolation_methods or []]
        bdr = (broadcast_domain_range or ("POD" if zone.network_type == "Basic" else "ZONE")).upper()
        if bdr not in ("ZONE", "POD"):
            raise InvalidParameterValue(f"Invalid broadcast domain range {broadcast_domain_range}; use ZONE or POD")
        if tags and len(tags) > 1:
            raise InvalidParameterValue("Only one tag can be specified for a physical network at this time")
        network = PhysicalNetwork(
            name=name, zone_id=zone.id, state="Disabled", vlan=vlan,
            tags=",".join(tags) if tags else None, isolation_methods=",".join(methods) or None,
            broadcast_domain_range=bdr, network_speed=network_speed,
        )
        self.session.add(network)
        self.session.flush()
        return network

    def update_physical_network(self, network: PhysicalNetwork, *, state: str | None = None,
                                vlan: str | None = None, tags: Sequence[str] | None = None,
                                network_speed: str | None = None) -> PhysicalNetwork:
        self._live(network)
        if state is not None:
            network.state = choose(state, ("Enabled", "Disabled"),
                                   f"Unable to resolve state '{state}' to a supported value (Enabled or Disabled)")
        if vlan is not None:
            network.vlan = vlan or None
        if tags is not None:
            if len(tags) > 1:
                raise InvalidParameterValue("Only one tag can be specified for a physical network at this time")
            network.tags = ",".join(tags) or None
        if network_speed is not None:
            network.network_speed = network_speed
        self.session.flush()
        return network

    def delete_physical_network(self, network: PhysicalNetwork) -> None:
        self._live(network)
        zone = self.session.get(Zone, network.zone_id)
        if zone is not None and zone.removed is None and zone.allocation_state == "Enabled":
            remaining = [n for n in self.physical_networks(zone) if n.id != network.id]
            if not remaining:
                raise CloudRuntimeError(
                    f"Unable to delete physical network {network.uuid}: zone {zone.name} is enabled and "
                    "this is its only physical network; disable the zone first"
                )
        for tt in self.traffic_types(network):
            tt.removed = utcnow()
        network.removed = utcnow()

    def add_traffic_type(self, network: PhysicalNetwork, traffic_type: str, *, kvm_label: str | None = None,
                         xen_label: str | None = None, vmware_label: str | None = None,
                         vlan: str | None = None) -> TrafficType:
        self._live(network)
        name = traffic_type_name(traffic_type)
        for existing in self.traffic_types(network):
            if existing.traffic_type == name:
                raise InvalidParameterValue(
                    f"This physical network already supports the traffic type: {name}"
                )
        if name in ZONE_WIDE_TRAFFIC:
            zone = self.session.get(Zone, network.zone_id)
            elsewhere = self.zone_traffic(zone).get(name)
            if elsewhere is not None:
                other = self.session.get(PhysicalNetwork, elsewhere.physical_network_id)
                raise InvalidParameterValue(
                    f"Zone {zone.name} already has a physical network with traffic type {name} ({other.name}); "
                    f"a zone carries {', '.join(ZONE_WIDE_TRAFFIC)} traffic on one physical network each"
                )
        tt = TrafficType(physical_network_id=network.id, traffic_type=name, kvm_label=kvm_label,
                         xen_label=xen_label, vmware_label=vmware_label, vlan=vlan)
        self.session.add(tt)
        self.session.flush()
        return tt

    def update_traffic_type(self, tt: TrafficType, *, kvm_label: str | None = None, xen_label: str | None = None,
                            vmware_label: str | None = None) -> TrafficType:
        if tt.removed is not None:
            raise InvalidParameterValue(f"Unable to find traffic type {tt.uuid}")
        if kvm_label is not None:
            tt.kvm_label = kvm_label or None
        if xen_label is not None:
            tt.xen_label = xen_label or None
        if vmware_label is not None:
            tt.vmware_label = vmware_label or None
        self.session.flush()
        return tt

    def delete_traffic_type(self, tt: TrafficType) -> None:
        if tt.removed is not None:
            raise InvalidParameterValue(f"Unable to find traffic type {tt.uuid}")
        tt.removed = utcnow()

    def _live(self, network: PhysicalNetwork) -> None:
        if network.removed is not None:
            raise InvalidParameterValue(f"Unable to find physical network by id {network.uuid}")

    # --- reads: listPhysicalNetworks --------------------------------------------------

    def list_physical_networks(self, p: SimpleNamespace) -> Page:
        q = select(PhysicalNetwork).where(PhysicalNetwork.removed.is_(None))
        return page(self.ctx, p, filtered(q, PHYSICAL_NETWORK_FILTERS, p), PhysicalNetwork.id)

    def zone_of(self, network: PhysicalNetwork) -> Zone | None:
        return self.session.get(Zone, network.zone_id)

    def network_of(self, traffic_type: TrafficType) -> PhysicalNetwork | None:
        return self.session.get(PhysicalNetwork, traffic_type.physical_network_id)


PHYSICAL_NETWORK_FILTERS = (
    Filter("id", PhysicalNetwork.id, ROW),
    Filter("name", PhysicalNetwork.name, NOCASE),
    Filter("zoneid", PhysicalNetwork.zone_id, ROW),
    keyword(PhysicalNetwork.name),
)
