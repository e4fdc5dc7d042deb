"""Typed configuration with scopes (global, zone, cluster, storagepool, account, domain).

Each key is declared once in KEYS with its type, default (CloudStack's), the scopes where it
may be set, and a validator. A scoped value overrides the global one; an unset scoped value
falls back to global, and an unset global value to the default. The over-provisioning factors
are special at cluster scope: they live in the cluster details `cpuOvercommitRatio` and
`memoryOvercommitRatio`, which is what capacity arithmetic reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import threading
from dataclasses import dataclass

from sqlalchemy import select

from .. import values
from ..errors import InvalidParameterValue
from ..persistence.models import Cluster, ConfigValue

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session
    from ..persistence.db import Database
    from ..persistence.models import Account, Domain, ImageStore, StoragePool, Zone

    # The row a scoped value belongs to, one per scope of SCOPES.
    ScopeResource: TypeAlias = Zone | Cluster | StoragePool | Account | Domain | ImageStore

SCOPES = ("zone", "cluster", "storagepool", "account", "domain", "imagestore")

CLUSTER_DETAIL_OF = {
    "cpu.overprovisioning.factor": "cpuOvercommitRatio",
    "mem.overprovisioning.factor": "memoryOvercommitRatio",
}


@dataclass(frozen=True)
class Key:
    name: str
    default: str | None
    type: str = "String"            # String, Integer, Long, Float, Boolean
    scopes: tuple = ()              # scopes besides global
    category: str = "Advanced"
    component: str = "management-server"
    description: str = ""
    dynamic: bool = True
    minimum: float | None = None
    group: str = "Miscellaneous"
    subgroup: str = "Others"
    maximum: float | None = None
    choices: tuple = ()             # allowed values of a String key, any case

    def validate(self, value: str | None) -> None:
        """Raise InvalidParameterValue unless `value` fits the key's type and range."""
        if value is None:
            return
        if self.type == "Boolean":
            try:
                values.parse_bool(value)
            except ValueError:
                raise InvalidParameterValue("Please enter either 'true' or 'false'.") from None
            return
        if self.type in ("Integer", "Long", "Float"):
            try:
                # What a Java Integer, Long or Float holds, in ASCII digits: larger values cannot
                # be stored, and a factor beyond a float's range turns capacities into infinities.
                number = self.typed(value)
            except ValueError:
                kind = "decimal number" if self.type == "Float" else "integer"
                raise InvalidParameterValue(
                    f"Please enter a valid {kind} value for parameter {self.name}"
                ) from None
            if self.maximum is not None and not (self.minimum or 0) <= number <= self.maximum:
                raise InvalidParameterValue(
                    f"Please enter a value between {self.minimum or 0:g} and {self.maximum:g} for the configuration parameter: {self.name}"
                )
            if self.minimum is not None and number < self.minimum:
                bound = (f"{self.minimum:g}")
                raise InvalidParameterValue(
                    f"{self.name} should be greater than or equal to {bound}"
                )
            return
        if self.choices and value.lower() not in (c.lower() for c in self.choices):
            raise InvalidParameterValue(f"Please enter : {','.join(self.choices)}")

    def typed(self, value: str | None) -> Any:
        if value is None:
            return None
        if self.type == "Boolean":
            return values.parse_bool(value)
        if self.type == "Integer":
            return values.parse_int(value, *values.INT32)
        if self.type == "Long":
            return values.parse_int(value)
        if self.type == "Float":
            return values.parse_decimal(value)
        return value


def _k(name: str, default: str | None, type: str = "String", scopes: Iterable[str] = (), description: str = "",
       **kw: Any) -> Key:
    return Key(name, default, type, tuple(scopes), description=description, **kw)


KEYS = {k.name: k for k in (
    _k("cpu.overprovisioning.factor", "1.0", "Float", ["cluster"],
       "Used for CPU overprovisioning calculation; available CPU will be (actualCpuCapacity * cpu.overprovisioning.factor)",
       minimum=1, category="Advanced", component="CapacityManager", group="Compute", subgroup="Overprovisioning"),
    _k("mem.overprovisioning.factor", "1.0", "Float", ["cluster"],
       "Used for memory overprovisioning calculation", minimum=1, component="CapacityManager",
       group="Compute", subgroup="Overprovisioning"),
    _k("storage.overprovisioning.factor", "2", "Float", ["storagepool"],
       "Used for storage overprovisioning calculation; available storage will be (actualStorageSize * storage.overprovisioning.factor)",
       minimum=1, component="StorageManager", group="Storage", subgroup="Overprovisioning"),
    _k("cluster.cpu.allocated.capacity.disablethreshold", "0.85", "Float", ["cluster"],
       "Percentage (as a value between 0 and 1) of cpu utilization above which allocators will disable using the cluster for low cpu available",
       component="CapacityManager", group="Compute", maximum=1),
    _k("cluster.memory.allocated.capacity.disablethreshold", "0.85", "Float", ["cluster"],
       "Percentage (as a value between 0 and 1) of memory utilization above which allocators will disable using the cluster for low memory available",
       component="CapacityManager", group="Compute", maximum=1),
    _k("cluster.cpu.allocated.capacity.notificationthreshold", "0.75", "Float", ["cluster"],
       "Percentage (as a value between 0 and 1) of cpu utilization above which alerts will be sent about low cpu available",
       component="AlertManager", group="Compute", maximum=1),
    _k("cluster.memory.allocated.capacity.notificationthreshold", "0.75", "Float", ["cluster"],
       "Percentage (as a value between 0 and 1) of memory utilization above which alerts will be sent about low memory available",
       component="AlertManager", group="Compute", maximum=1),
    _k("cluster.threshold.enabled", "true", "Boolean", [],
       "Enable/Disable cluster thresholds. If disabled, an instance can start in a cluster even if the threshold is crossed",
       component="CapacityManager"),
    _k("pool.storage.capacity.disablethreshold", "0.85", "Float", ["zone"],
       "Percentage (as a value between 0 and 1) of storage utilization above which allocators will disable using the pool for low storage available",
       component="CapacityManager", group="Storage", maximum=1),
    _k("pool.storage.allocated.capacity.disablethreshold", "0.85", "Float", ["zone"],
       "Percentage (as a value between 0 and 1) of allocated storage utilization above which allocators will disable "
       "using the pool for low allocated storage available",
       component="CapacityManager", group="Storage", maximum=1),
    _k("ping.interval", "60", "Integer", [], "Interval in seconds at which agents ping the management server",
       minimum=1, component="AgentManager", dynamic=False, group="Agent"),
    _k("ping.timeout", "2.5", "Float", [],
       "Multiplier of ping.interval after which a host that has not pinged is considered late",
       minimum=1, component="AgentManager", dynamic=False, group="Agent"),
    _k("host", "localhost", "String", [], "The IP address(es) of the management server that agents connect to (comma list)",
       component="AgentManager", dynamic=False, group="Agent"),
    _k("port", "8250", "Integer", [], "Port on which the management server listens for agents",
       minimum=1, component="AgentManager", dynamic=False, group="Agent"),
    _k("workers", "5", "Integer", [], "Number of worker threads handling remote agent connections",
       minimum=1, component="AgentManager", dynamic=False, group="Agent"),
    _k("api.throttling.enabled", "false", "Boolean", [], "Enable/disable API throttling",
       component="ApiServer", dynamic=False, group="API"),
    _k("api.throttling.interval", "1", "Integer", [], "Time interval (in seconds) to reset API count",
       minimum=1, component="ApiServer", dynamic=False, group="API"),
    _k("api.throttling.max", "25", "Integer", [], "Max allowed number of APIs within fixed interval",
       minimum=1, component="ApiServer", dynamic=False, group="API"),
    _k("api.throttling.cachesize", "50000", "Integer", [], "Account based API count cache size",
       minimum=1, component="ApiServer", dynamic=False, group="API"),
    _k("ha.tag", None, "String", [], "HA tag defining that the host marked with this tag can be used for HA purposes only",
       component="HighAvailabilityManager"),
    _k("host.reservation.release.period", "300000", "Long", [],
       "The interval in milliseconds between host reservation release checks", component="ResourceManager"),
    _k("router.stats.interval", "300", "Integer", [], "Interval (in seconds) to report router statistics",
       component="NetworkOrchestrationService"),
    _k("incorrect.login.attempts.allowed", "5", "Integer", [],
       "Incorrect login attempts allowed before the user is disabled", minimum=1,
       component="AccountManager", group="Access", subgroup="Users"),
    _k("system.vm.random.password", "false", "Boolean", [], "Randomize system vm password the first time management server starts",
       component="ManagementServer"),
    _k("consoleproxy.sslEnabled", "false", "Boolean", [],
       "Serve the console proxy (its noVNC page and WebSocket) over TLS with the management server's certificate",
       component="ConsoleProxyManager", dynamic=False, group="Console Proxy"),
    _k("consoleproxy.url.domain", None, "String", [],
       "Host name console URLs name instead of the management server's address (a name whose certificate "
       "the browser trusts, when consoleproxy.sslEnabled is true)",
       component="ConsoleProxyManager", group="Console Proxy"),
    _k("consoleproxy.token.timeout", "120", "Integer", [],
       "Seconds a console URL's one-time token stays valid before it is first used; a used token is refused",
       minimum=1, component="ConsoleProxyManager", group="Console Proxy"),
    _k("consoleproxy.loadscan.interval", "10000", "Long", [], "The time interval (in milliseconds) to scan console proxy working-load info",
       component="ConsoleProxyManager"),
    _k("default.page.size", "500", "Long", [], "Default page size for API list* commands",
       minimum=1, component="ManagementServer", dynamic=False),
    _k("check.pod.cidrs", "true", "Boolean", [], "If true, different pods must belong to different CIDR subnets.",
       component="ConfigurationManager"),
    _k("capacity.skipcounting.hours", "3600", "Integer", [],
       "Time (in seconds) to wait before release VM's cpu and memory when VM in stopped state",
       component="CapacityManager"),
    _k("agent.load.threshold", "0.7", "Float", [],
       "Percentage (as a value between 0 and 1) of connected agents after which agent load balancing will start happening",
       component="ClusteredAgentManager", maximum=1),
    _k("use.external.dns", "false", "Boolean", ["zone"], "Bypass internal dns, use external dns1 and dns2",
       component="NetworkOrchestrationService"),
    _k("allow.public.user.templates", "true", "Boolean", ["account"],
       "If false, users will not be able to create public templates.", component="TemplateManager"),
    _k("network.loadbalancer.haproxy.stats.visibility", "global", "String", [],
       "Load Balancer(haproxy) stats visibility, the value can be one of the following six parameters : global,guest-network,link-local,disabled,all,default",
       component="NetworkOrchestrationService",
       choices=("global", "guest-network", "link-local", "disabled", "all", "default")),
    _k("vmware.recycle.hung.wokervm", "false", "Boolean", [], "Specify whether or not to recycle hung worker VMs",
       component="VMwareManager"),
    _k("hypervisor.list", "KVM,Simulator", "String", [], "The list of hypervisors that this deployment will use.",
       component="ManagementServer", dynamic=False),
    _k("enforce.post.requests.and.timestamps", "false", "Boolean", [],
       "Enforce the use of POST requests, signatureVersion 3 and expiry timestamps for signed API requests",
       component="ApiServer", dynamic=False, group="API"),
    _k("simulator.host.cpus", "8", "Integer", [], "Number of CPUs of a Simulator host added without a cpus= URL parameter",
       minimum=1, component="SimulatorManager"),
    _k("simulator.host.cpuspeed", "2000", "Integer", [], "CPU speed (MHz) of a Simulator host added without a cpuspeed= URL parameter",
       minimum=1, component="SimulatorManager"),
    _k("simulator.host.memory", "8589934592", "Long", [], "Memory (bytes) of a Simulator host added without a memory= URL parameter",
       minimum=1, component="SimulatorManager"),
    _k("simulator.pool.capacity", "1099511627776", "Long", [],
       "Capacity (bytes) of a primary storage pool of a Simulator cluster created without capacitybytes",
       minimum=1, component="SimulatorManager"),
    _k("kvm.host.connect.timeout", "300", "Integer", [],
       "Seconds addHost waits for a KVM host's agent to connect before giving up",
       minimum=1, component="ResourceManager"),
)}


def key(name: str) -> Key:
    try:
        return KEYS[name]
    except KeyError:
        raise InvalidParameterValue(f"Config parameter with name {name} doesn't exist") from None


class GlobalSettings:
    """Process-wide cache of effective global values, refreshed on every update."""

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._values = None

    def load(self, session: Session | None = None) -> dict[str, str | None]:
        if session is None:
            with self.db.transaction(readonly=True) as s:
                return self.load(s)
        rows = session.execute(
            select(ConfigValue.name, ConfigValue.value).where(ConfigValue.scope == "global")
        ).all()
        values = {name: k.default for name, k in KEYS.items()}
        values.update({name: value for name, value in rows if name in KEYS})
        with self._lock:
            self._values = values
        return values

    def get(self, name: str) -> str | None:
        values = self._values if self._values is not None else self.load()
        return values.get(name, KEYS[name].default if name in KEYS else None)

    def typed(self, name: str) -> Any:
        return KEYS[name].typed(self.get(name))

    def invalidate(self) -> None:
        with self._lock:
            self._values = None


class ConfigurationService:
    """Reads and writes configuration values inside one transaction."""

    def __init__(self, session: Session, settings: GlobalSettings):
        self.session = session
        self.settings = settings

    def get(self, name: str) -> str | None:
        """The effective global value of `name`, from the engine-wide cache."""
        return self.settings.get(name)

    def typed(self, name: str) -> Any:
        """The effective global value of `name` converted to its type, from the cache."""
        return self.settings.typed(name)

    def invalidate(self) -> None:
        """Drop the engine-wide cache; the next read reloads it from the database."""
        self.settings.invalidate()

    def _row(self, name: str, scope: str, resource_id: int):
        return self.session.execute(
            select(ConfigValue).where(
                ConfigValue.name == name,
                ConfigValue.scope == scope,
                ConfigValue.resource_id == resource_id,
            )
        ).scalar_one_or_none()

    def global_value(self, name: str) -> str | None:
        row = self._row(name, "global", 0)
        return row.value if row is not None else key(name).default

    def scoped_value(self, name: str, scope: str, resource: ScopeResource) -> str | None:
        """Effective value of `name` for `resource` at `scope` (scoped, else global)."""
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            value = resource.detail(CLUSTER_DETAIL_OF[name])
            if value is not None:
                return value
        row = self._row(name, scope, resource.id)
        if row is not None:
            return row.value
        return self.global_value(name)

    def listing(self, scope: str | None = None, resource: ScopeResource | None = None) -> list[tuple[Key, str | None]]:
        """[(Key, effective value)] ordered by name; with a scope, only the keys valid there."""
        rows = self.session.execute(
            select(ConfigValue.name, ConfigValue.value).where(ConfigValue.scope == "global")
        ).all()
        values = {name: k.default for name, k in KEYS.items()}
        values.update({name: value for name, value in rows if name in KEYS})
        keys = [k for k in KEYS.values() if scope is None or scope in k.scopes]
        if scope is not None:
            scoped = self.session.execute(
                select(ConfigValue.name, ConfigValue.value).where(
                    ConfigValue.scope == scope, ConfigValue.resource_id == resource.id)
            ).all()
            values.update(dict(scoped))
            if scope == "cluster":
                for name, detail in CLUSTER_DETAIL_OF.items():
                    if resource.detail(detail) is not None:
                        values[name] = resource.detail(detail)
        return [(k, values.get(k.name)) for k in sorted(keys, key=lambda k: k.name)]

    def set_global(self, name: str, value: str | None) -> None:
        k = key(name)
        k.validate(value)
        row = self._row(name, "global", 0)
        if row is None:
            self.session.add(ConfigValue(name=name, scope="global", resource_id=0, value=value))
        else:
            row.value = value
        self.session.flush()
        self.settings.invalidate()

    def set_scoped(self, name: str, value: str | None, scope: str, resource: ScopeResource) -> None:
        k = key(name)
        if scope not in k.scopes:
            raise InvalidParameterValue(f"Invalid scope id provided for the parameter {name}")
        k.validate(value)
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            resource.set_detail(CLUSTER_DETAIL_OF[name], value)
        row = self._row(name, scope, resource.id)
        if row is None:
            self.session.add(ConfigValue(name=name, scope=scope, resource_id=resource.id, value=value))
        else:
            row.value = value
        self.session.flush()

    def reset(self, name: str, scope: str | None = None, resource: ScopeResource | None = None) -> str | None:
        k = key(name)
        if scope is None:
            row = self._row(name, "global", 0)
            if row is not None:
                self.session.delete(row)
            self.session.flush()
            self.settings.invalidate()
            return k.default
        if scope not in k.scopes:
            raise InvalidParameterValue(f"Invalid scope id provided for the parameter {name}")
        row = self._row(name, scope, resource.id)
        if row is not None:
            self.session.delete(row)
        if scope == "cluster" and name in CLUSTER_DETAIL_OF:
            # CloudStack writes the global value back into the cluster detail.
            resource.set_detail(CLUSTER_DETAIL_OF[name], self.global_value(name))
        self.session.flush()
        return self.scoped_value(name, scope, resource)

    def cluster_ratio(self, cluster: Cluster, name: str) -> float:
        """The over-commit ratio capacity uses: the cluster detail, not the live global."""
        value = cluster.detail(CLUSTER_DETAIL_OF[name])
        return float(value if value is not None else self.global_value(name))
