# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Shared shape of the cs_* modules: find -> compare -> create/update/delete -> result.

Each object type is described once by a `Kind`: how to list it and a field table
mapping result keys (the module's option names, CloudStack names split into words)
to API fields.  The same table builds the request, the comparison and the result,
so check mode, diff and the real answer always agree on names.

The field table also carries the names the ngine_io.cloudstack modules use where
they differ (`Field.compat`): those names are accepted as option aliases and
returned as flat keys beside the module's own nested object, so a playbook written
for ngine_io.cloudstack runs with only the module names changed.
"""

from __future__ import annotations

import os
import re

from ansible.module_utils.basic import AnsibleFallbackNotFound, AnsibleModule, env_fallback
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import (
    CloudStackClient,
    CloudStackError,
    resolve_connection,
)

DEFAULT_WAIT_TIMEOUT = 300
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cs_argument_spec():
    """Connection options of every cs_* module (documented in the cloudstack doc fragment)."""
    return dict(
        api_url=dict(type="str", fallback=(env_fallback, ["CLOUDSTACK_ENDPOINT"])),
        api_key=dict(type="str", fallback=(env_fallback, ["CLOUDSTACK_KEY"]), no_log=False),
        api_secret=dict(type="str", fallback=(env_fallback, ["CLOUDSTACK_SECRET"]), no_log=True),
        api_timeout=dict(type="int", fallback=(env_fallback, ["CLOUDSTACK_TIMEOUT"])),
        api_http_method=dict(type="str", choices=["get", "post"], fallback=(env_fallback, ["CLOUDSTACK_METHOD"])),
        api_config_file=dict(type="path", fallback=(env_fallback, ["CLOUDSTACK_CONFIG"])),
        api_region=dict(type="str", default="cloudstack", fallback=(env_fallback, ["CLOUDSTACK_REGION"])),
        api_verify_ssl_cert=dict(type="str", fallback=(env_fallback, ["CLOUDSTACK_VERIFY"])),
        validate_certs=dict(type="bool", default=True,
                            fallback=(no_tls_verify_fallback, ["CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY"])),
        # Accepted for playbooks written for ngine_io.cloudstack; every job is followed to its end.
        poll_async=dict(type="bool", default=True),
    )


def no_tls_verify_fallback(*names):
    """validate_certs from E(CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY): a true value turns verification off."""
    for name in names:
        if name in os.environ:
            return not boolean(os.environ[name], strict=False)
    raise AnsibleFallbackNotFound


class ResourceError(Exception):
    """A failure the module explains itself (not found, invalid combination, ...)."""


def looks_like_uuid(value):
    return bool(_UUID.match(str(value).lower()))


def first_item(value):
    """Pod ranges come as lists (one entry per range); the module manages the first."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def comma_list(value):
    """Tags come as one comma-separated string."""
    if isinstance(value, list):
        return value
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Field(object):
    """One entry of a field table.

    api: key in API answers; param: request parameter when it differs;
    convert: turns the API value into the result value;
    create_only: sent on create, never compared nor updated;
    compat: the ngine_io.cloudstack name of the same option and result key, when it
    differs (accepted as an alias, returned as a flat key);
    compat_convert: turns the result value into the ngine_io one;
    compat_alias: whether the ngine_io name is also an alias of the option (not when
    ngine_io's option of that name means something else).
    """

    def __init__(self, api, param=None, convert=None, create_only=False, compat=None, compat_convert=None,
                 compat_alias=True):
        self.api = api
        self.param = param or api
        self.convert = convert
        self.create_only = create_only
        self.compat = compat
        self.compat_convert = compat_convert
        self.compat_alias = compat_alias


# Keys Ansible gives a meaning to in any module result; never used as flat keys.
RESERVED_RESULT_KEYS = frozenset((
    "changed", "failed", "msg", "diff", "invocation", "warnings", "deprecations", "ansible_facts",
    "skipped", "rc", "stdout", "stderr", "stdout_lines", "stderr_lines", "exception", "results",
    "backup_file", "module_stdout", "module_stderr",
))


class Kind(object):
    """How one CloudStack object type is listed, named and shown."""

    def __init__(self, label, list_command, item_key, fields, plural):
        self.label = label
        self.list_command = list_command
        self.item_key = item_key
        self.plural = plural
        self.fields = dict((key, spec if isinstance(spec, Field) else Field(spec)) for key, spec in fields.items())

    def to_result(self, obj):
        """API object -> result dict keyed like the module options."""
        result = {}
        for key, field in self.fields.items():
            if field.api in obj:
                value = obj[field.api]
                result[key] = field.convert(value) if field.convert else value
        return result

    def compat_result(self, result):
        """A result dict with the ngine_io.cloudstack names added beside the module's own."""
        flat = dict(result)
        for key, field in self.fields.items():
            if field.compat and key in result:
                flat[field.compat] = field.compat_convert(result[key]) if field.compat_convert else result[key]
        return flat

    def flat_keys(self, result, nested_key):
        """Top-level keys of a module result, as ngine_io.cloudstack returns them."""
        return dict((key, value) for key, value in self.compat_result(result).items()
                    if key not in RESERVED_RESULT_KEYS and key != nested_key)

    def compat_aliases(self, argument_spec):
        """{option: [ngine_io name]} for the options of `argument_spec` ngine_io names differently."""
        aliases = {}
        for key, field in self.fields.items():
            if field.compat and field.compat_alias and key in argument_spec and field.compat not in argument_spec:
                aliases[key] = [field.compat]
        return aliases


def add_aliases(argument_spec, aliases):
    """Add aliases ({option: [names]}) to the options of an argument spec, in place."""
    for option, names in aliases.items():
        existing = argument_spec[option].setdefault("aliases", [])
        existing.extend(name for name in names if name not in existing)
    return argument_spec


def lower_or_none(value):
    return value.lower() if isinstance(value, str) else value


# ngine_io.cloudstack's allocation_state of a storage pool, from the pool's state.
POOL_ALLOCATION_STATES = {"Up": "enabled", "Disabled": "disabled", "Maintenance": "maintenance"}

# Scope keys of results; sent as zoneid/podid/clusterid from lookups, never from the field table.
_SCOPE_KEYS = ("zone", "zone_id", "pod", "pod_id", "cluster", "cluster_id")
_SCOPE_FIELDS = {"zone_id": "zoneid", "zone": "zonename", "pod_id": "podid", "pod": "podname"}

ZONE = Kind("zone", "listZones", "zone", plural="zones", fields={
    "id": "id",
    "name": "name",
    "dns1": "dns1",
    "dns2": "dns2",
    "internal_dns1": "internaldns1",
    "internal_dns2": "internaldns2",
    "dns1_ipv6": "ip6dns1",
    "dns2_ipv6": "ip6dns2",
    "network_type": Field("networktype", create_only=True),
    "network_domain": "domain",
    "guest_cidr_address": "guestcidraddress",
    "security_groups_enabled": Field("securitygroupsenabled", param="securitygroupenabled", create_only=True,
                                     compat="securitygroups_enabled"),
    "local_storage_enabled": "localstorageenabled",
    "dhcp_provider": "dhcpprovider",
    "allocation_state": "allocationstate",
    "zone_token": "zonetoken",
    "tags": "tags",
})

POD = Kind("pod", "listPods", "pod", plural="pods", fields=dict(_SCOPE_FIELDS, **{
    "id": "id",
    "name": "name",
    "gateway": "gateway",
    "netmask": "netmask",
    "start_ip": Field("startip", convert=first_item, create_only=True),
    "end_ip": Field("endip", convert=first_item, create_only=True),
    "allocation_state": "allocationstate",
}))

CLUSTER = Kind("cluster", "listClusters", "cluster", plural="clusters", fields=dict(_SCOPE_FIELDS, **{
    "id": "id",
    "name": Field("name", param="clustername"),
    "hypervisor": Field("hypervisortype", param="hypervisor", create_only=True),
    "cluster_type": Field("clustertype", create_only=True),
    "arch": Field("arch", create_only=True),
    "allocation_state": "allocationstate",
    "managed_state": "managedstate",
    "cpu_overcommit_ratio": "cpuovercommitratio",
    "memory_overcommit_ratio": "memoryovercommitratio",
}))

HOST = Kind("host", "listHosts", "host", plural="hosts", fields=dict(_SCOPE_FIELDS, **{
    "id": "id",
    "name": "name",
    "ip_address": "ipaddress",
    "type": Field("type", compat="host_type", compat_alias=False),
    "state": "state",
    "resource_state": Field("resourcestate", compat="allocation_state", compat_convert=lower_or_none,
                            compat_alias=False),
    "hypervisor": Field("hypervisor", create_only=True),
    "hypervisor_version": "hypervisorversion",
    "cluster_id": "clusterid",
    "cluster": "clustername",
    "cluster_type": "clustertype",
    "host_tags": Field("hosttags", convert=comma_list),
    "cpu_sockets": "cpusockets",
    "cpu_number": "cpunumber",
    "cpu_speed": "cpuspeed",
    "memory_total": "memorytotal",
    "memory_allocated": "memoryallocated",
    "memory_with_overprovisioning": "memorywithoverprovisioning",
    "cpu_allocated_mhz": "cpuallocatedvalue",
    "cpu_with_overprovisioning": "cpuwithoverprovisioning",
    "version": Field("version", compat="host_version", compat_alias=False),
    "created": "created",
    "disconnected": "disconnected",
    "last_pinged": "lastpinged",
    "removed": "removed",
}))

STORAGE_POOL = Kind("storage pool", "listStoragePools", "storagepool", plural="storage_pools",
                    fields=dict(_SCOPE_FIELDS, **{
                        "id": "id",
                        "name": "name",
                        "cluster_id": "clusterid",
                        "cluster": "clustername",
                        "scope": Field("scope", create_only=True),
                        "type": "type",
                        "ip_address": "ipaddress",
                        "path": "path",
                        "state": Field("state", compat="allocation_state", compat_alias=False,
                                       compat_convert=POOL_ALLOCATION_STATES.get),
                        "hypervisor": Field("hypervisor", create_only=True),
                        "provider": Field("provider", create_only=True),
                        "storage_tags": Field("tags", convert=comma_list),
                        "capacity_bytes": Field("disksizetotal", param="capacitybytes", create_only=True),
                        "capacity_iops": Field("capacityiops", create_only=True),
                        "disk_size_total": "disksizetotal",
                        "disk_size_allocated": "disksizeallocated",
                        "disk_size_used": "disksizeused",
                        "overprovision_factor": "overprovisionfactor",
                    }))

IMAGE_STORE = Kind("image store", "listImageStores", "imagestore", plural="image_stores", fields={
    "id": "id",
    "name": "name",
    "url": Field("url", create_only=True),
    "zone_id": "zoneid",
    "zone": "zonename",
    "provider": Field("providername", param="provider", create_only=True, compat="provider_name",
                      compat_alias=False),
    "protocol": "protocol",
    "scope": "scope",
})

TEMPLATE = Kind("template", "listTemplates", "template", plural="templates", fields={
    "id": "id",
    "name": "name",
    "display_text": Field("displaytext", compat="displaytext", compat_alias=False),
    "url": Field("url", create_only=True),
    "format": Field("format", create_only=True),
    "hypervisor": Field("hypervisor", create_only=True),
    "checksum": Field("checksum", create_only=True),
    "os_type": Field("ostypename", param="ostypeid"),
    "os_type_id": "ostypeid",
    "zone_id": "zoneid",
    "zone": "zonename",
    "is_public": Field("ispublic", compat="public", compat_alias=False),
    "is_featured": Field("isfeatured", compat="featured", compat_alias=False),
    "is_ready": "isready",
    "status": "status",
    "size": "size",
    "physical_size": "physicalsize",
    "account": "account",
    "created": "created",
})

CONFIGURATION = Kind("configuration", "listConfigurations", "configuration", plural="configurations", fields={
    "name": "name",
    "value": "value",
    "default_value": "defaultvalue",
    "scope": "scope",
    "category": "category",
    "description": "description",
    "is_dynamic": "isdynamic",
})

PHYSICAL_NETWORK = Kind("physical network", "listPhysicalNetworks", "physicalnetwork", plural="physical_networks",
                        fields={
                            "id": "id",
                            "name": "name",
                            "zone_id": "zoneid",
                            "zone": "zonename",
                            "state": "state",
                            "vlan": "vlan",
                            "tags": Field("tags", convert=comma_list),
                            "isolation_methods": Field("isolationmethods", convert=comma_list, create_only=True,
                                                       compat="isolation_method", compat_convert=",".join),
                            "broadcast_domain_range": Field("broadcastdomainrange", create_only=True),
                            "network_speed": "networkspeed",
                        })


def traffic_types(client, network_id):
    """Traffic types of a physical network as results show them, sorted by type."""
    return sorted(({"type": item["traffictype"], "kvm_network_label": item.get("kvmnetworklabel")}
                   for item in client.list("listTrafficTypes", "traffictype", physicalnetworkid=network_id)),
                  key=lambda entry: entry["type"])


ACCOUNT = Kind("account", "listAccounts", "account", plural="accounts", fields={"id": "id", "name": "name"})
DOMAIN = Kind("domain", "listDomains", "domain", plural="domains", fields={"id": "id", "name": "name", "path": "path"})


def after_values(changes):
    """{key: after} of a {key: (before, after)} comparison."""
    return dict((key, change[1]) for key, change in changes.items())


def values_differ(want, have):
    """Compare a wanted option value with the current one.

    Lists compare as sets of strings (tags are unordered); everything else as
    strings, so 8080 and "8080" agree.
    """
    if isinstance(want, list):
        return sorted(str(item) for item in want) != sorted(str(item) for item in comma_list(have))
    if isinstance(want, bool) or isinstance(have, bool):
        return str(want).lower() != str(have).lower()
    return str(want) != ("" if have is None else str(have))


class CloudStackModule(object):
    """Connection, calls, memoised lookups and the single place that fails the module."""

    kind = None
    # Extra ngine_io.cloudstack option names, {option: [alias]}, beside those of the field table.
    option_aliases = {}

    def __init__(self, argument_spec, **kwargs):
        spec = cs_argument_spec()
        spec.update(self.compat_spec(argument_spec))
        self.module = AnsibleModule(argument_spec=spec, supports_check_mode=True, **kwargs)
        self.params = self.module.params
        self._client = None
        self._lookups = {}

    def compat_spec(self, argument_spec):
        """The module's argument spec with the ngine_io.cloudstack option names added as aliases."""
        spec = dict((name, dict(option)) for name, option in argument_spec.items())
        if self.kind is not None:
            add_aliases(spec, self.kind.compat_aliases(spec))
        return add_aliases(spec, self.option_aliases)

    @property
    def client(self):
        if self._client is None:
            settings = resolve_connection(self.params)
            self._client = CloudStackClient(
                settings["endpoint"], settings["key"], settings["secret"], timeout=settings["timeout"],
                method=settings["method"], validate_certs=settings["validate_certs"], ca_path=settings["verify"])
        return self._client

    @property
    def wait_timeout(self):
        value = self.params.get("wait_timeout")
        return DEFAULT_WAIT_TIMEOUT if value is None else value

    def call(self, command, **params):
        """Run a command, waiting for its job if it is asynchronous."""
        return self.client.run(command, self.wait_timeout, **params)

    def list(self, kind, **filters):
        return self.client.list(kind.list_command, kind.item_key, **filters)

    def run(self):
        """The only place a cs_* module fails."""
        try:
            result = self.execute()
        except CloudStackError as exc:
            self.module.fail_json(msg=str(exc), **exc.details())
        except ResourceError as exc:
            self.module.fail_json(msg=str(exc))
        self.module.exit_json(**result)

    def execute(self):
        raise NotImplementedError

    # Name-or-id lookups -------------------------------------------------

    def lookup(self, kind, value, where="", **scope):
        """Find one object by id or (case-insensitive) name within scope; memoised."""
        memo_key = (kind.label, str(value), tuple(sorted(scope.items())))
        if memo_key not in self._lookups:
            if looks_like_uuid(value):
                matches = self.list(kind, id=value, **scope)
            else:
                matches = [item for item in self.list(kind, name=value, **scope)
                           if str(item.get("name", "")).lower() == str(value).lower()]
            if not matches:
                raise ResourceError("%s '%s' not found%s" % (kind.label, value, where))
            if len(matches) > 1:
                raise ResourceError("%d %ss named '%s'%s; use the id instead" % (len(matches), kind.label, value, where))
            self._lookups[memo_key] = matches[0]
        return self._lookups[memo_key]

    def zone(self):
        return self.lookup(ZONE, self.params["zone"])

    def pod(self):
        zone = self.zone()
        return self.lookup(POD, self.params["pod"], " in zone '%s'" % zone["name"], zoneid=zone["id"])

    def cluster(self):
        zone = self.zone()
        scope = dict(zoneid=zone["id"])
        if self.params.get("pod"):
            scope["podid"] = self.pod()["id"]
        return self.lookup(CLUSTER, self.params["cluster"], " in zone '%s'" % zone["name"], **scope)

    def scope_ids(self):
        """zoneid/podid/clusterid of the options the user set, for create requests and filters."""
        ids = {}
        if self.params.get("zone"):
            ids["zoneid"] = self.zone()["id"]
        if self.params.get("pod"):
            ids["podid"] = self.pod()["id"]
        if self.params.get("cluster"):
            ids["clusterid"] = self.cluster()["id"]
        return ids

    def scope_result(self):
        """zone/pod/cluster names and ids as a created object would show them."""
        result = {}
        for option, lookup in (("zone", self.zone), ("pod", self.pod), ("cluster", self.cluster)):
            if option in self.params and self.params[option]:
                obj = lookup()
                result[option] = obj["name"]
                result[option + "_id"] = obj["id"]
        return result


class CloudStackResource(CloudStackModule):
    """find -> compare -> create/update/delete -> result, with check mode and diff.

    Subclasses set `kind` and the command names, and override the hooks whose
    default does not fit (`find`, `create`, `update`, `delete`).
    """

    kind = None
    create_command = None
    update_command = None
    delete_command = None
    # Options that locate the object; never compared nor sent to update.
    identity = ("name", "zone", "pod", "cluster")
    # Options CloudStack needs to create the object (beyond the required ones).
    required_for_create = ()
    # Result keys the API fills in on creation, for check mode predictions.
    create_defaults = {}
    # Whether find() passes the name to the list command (hosts match name or address instead).
    filter_by_name = True
    # Result key set from `state` (enabled/disabled/...), with the value per state.
    state_field = None
    state_values = {}
    # ngine_io.cloudstack sets enabled/disabled/maintenance with an allocation_state option
    # beside state=present; modules that set this accept it too.
    allocation_state_option = False

    def compat_spec(self, argument_spec):
        spec = super(CloudStackResource, self).compat_spec(argument_spec)
        if self.allocation_state_option:
            spec["allocation_state"] = dict(type="str", choices=sorted(self.state_values))
        return spec

    @property
    def state(self):
        state = self.params.get("state") or "present"
        if state == "present" and self.params.get("allocation_state") and self.allocation_state_option:
            return self.params["allocation_state"]
        return state

    # Flow -----------------------------------------------------------------

    def execute(self):
        found = self.find()
        before = self.to_result(found) if found else {}
        if self.state == "absent":
            after = {}
            changed = found is not None
            if changed and not self.module.check_mode:
                self.delete(found)
            resource = before
        elif found is None:
            want = self.desired()
            self.check_create(want)
            changed = True
            after = self.predict_create(want) if self.module.check_mode else self.to_result(self.create(want))
            resource = after
        else:
            want = self.desired()
            changes = self.compare(want, before)
            changed = bool(changes)
            if not changed:
                after = before
            elif self.module.check_mode:
                after = self.predict_update(before, changes)
            else:
                after = self.to_result(self.update(found, changes))
            resource = after
        result = self.kind.flat_keys(resource, self.result_key)
        result.update({"changed": changed, "diff": {"before": before, "after": after}, self.result_key: resource})
        return result

    def to_result(self, obj):
        return self.kind.to_result(obj)

    @property
    def result_key(self):
        return self.kind.label.replace(" ", "_")

    def desired(self):
        """Result-shaped dict of what the user asked for (options left unset are not managed)."""
        want = dict((key, self.params[key]) for key in self.kind.fields
                    if key in self.params and key != "state" and self.params[key] is not None)
        if self.state_field and self.state in self.state_values:
            want[self.state_field] = self.state_values[self.state]
        return want

    def compare(self, want, current):
        """{key: (before, after)} for managed keys whose value differs."""
        changes = {}
        for key, value in want.items():
            if key in self.identity or self.kind.fields[key].create_only:
                continue
            if values_differ(value, current.get(key)):
                changes[key] = (current.get(key), value)
        return changes

    def check_create(self, want):
        missing = [option for option in self.required_for_create if self.params.get(option) in (None, "", [])]
        if missing:
            raise ResourceError("creating %s '%s' needs %s"
                                % (self.kind.label, self.params.get("name"), ", ".join(missing)))

    def predict_create(self, want):
        predicted = dict(self.create_defaults)
        predicted.update(want)
        predicted.update(self.scope_result())
        return predicted

    def predict_update(self, before, changes):
        predicted = dict(before)
        predicted.update(after_values(changes))
        return predicted

    # Hooks -----------------------------------------------------------------

    def find_filters(self):
        return self.scope_ids()

    def matches(self, obj):
        return str(obj.get("name", "")).lower() == str(self.params["name"]).lower()

    def find(self):
        """The object the options designate, or None."""
        filters = self.find_filters()
        if self.filter_by_name and self.params.get("name"):
            filters["name"] = self.params["name"]
        found = [obj for obj in self.list(self.kind, **filters) if self.matches(obj)]
        if len(found) > 1:
            raise ResourceError("%d %ss match '%s'; remove the duplicates or narrow the scope"
                                % (len(found), self.kind.label, self.params.get("name")))
        return found[0] if found else None

    def request_params(self, values):
        """Request parameters for result-keyed values, through the field table."""
        return dict((self.kind.fields[key].param, value) for key, value in values.items()
                    if key in self.kind.fields and key not in _SCOPE_KEYS)

    def create_params(self, want):
        params = self.request_params(want)
        params.update(self.scope_ids())
        return params

    def unwrap(self, answer):
        """The object inside a create/update answer (list-returning adds included)."""
        obj = answer.get(self.kind.item_key, answer)
        if isinstance(obj, list):
            obj = obj[0] if obj else {}
        return obj

    def create(self, want):
        return self.unwrap(self.call(self.create_command, **self.create_params(want)))

    def update(self, current, changes):
        params = self.request_params(after_values(changes))
        return self.unwrap(self.call(self.update_command, id=current["id"], **params))

    def delete(self, current):
        self.call(self.delete_command, id=current["id"])


class CloudStackInfo(CloudStackModule):
    """List objects of one kind with filters; results under the kind's plural key."""

    kind = None
    # option -> list filter; zone/pod/cluster are resolved to ids.
    filters = {}
    # Filters always sent (hosts: only hypervisor hosts).
    fixed_filters = {}

    def execute(self):
        params = dict(self.fixed_filters)
        params.update(self.scope_ids())
        for option, api_filter in self.filters.items():
            if self.params.get(option) is not None:
                params[api_filter] = self.params[option]
        items = self.list(self.kind, **params)
        if self.params.get("name"):
            items = [item for item in items if str(item.get("name", "")).lower() == self.params["name"].lower()]
        return {"changed": False, self.kind.plural: [self.kind.compat_result(self.kind.to_result(item))
                                                     for item in items]}


def info_argument_spec(*scopes):
    """Options of an _info module: name plus the given scope options."""
    spec = dict(name=dict(type="str"))
    for scope in scopes:
        spec[scope] = dict(type="str")
    return spec
