#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_configuration
short_description: Manage configuration settings of a CloudStack-compatible cloud
description:
  - Set a configuration key globally or at zone, cluster, storage pool, account or domain scope.
  - Values are compared as strings, the way CloudStack stores them, so V(2.0) and V(2) differ.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Configuration key, for example C(cpu.overprovisioning.factor).
    type: str
    required: true
  value:
    description: Value to set. Booleans become V(true)/V(false).
    type: raw
    required: true
  zone:
    description:
      - Zone scope (name or UUID).
      - With O(cluster) or O(storage) it only narrows their lookup.
    type: str
  cluster:
    description: Cluster scope (name or UUID).
    type: str
  storage:
    description: Primary storage pool scope (name or UUID).
    type: str
  account:
    description: Account scope (name), looked up in O(domain).
    type: str
  domain:
    description:
      - Domain scope (name, path such as C(ROOT/sales), or UUID).
      - With O(account) it names the account's domain and defaults to V(ROOT).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Shorten the agent ping interval globally
  stackwright.cloudstack.cs_configuration:
    name: ping.interval
    value: 30

- name: Raise the CPU threshold of one cluster
  stackwright.cloudstack.cs_configuration:
    name: cluster.cpu.allocated.capacity.disablethreshold
    value: 0.9
    zone: zone1
    cluster: cluster1

- name: Let an account's users share templates
  stackwright.cloudstack.cs_configuration:
    name: allow.public.user.templates
    value: true
    account: admin
"""

RETURN = r"""
configuration:
  description: The setting at the requested scope.
  returned: success
  type: dict
  contains:
    name:
      description: Configuration key.
      type: str
      sample: ping.interval
    value:
      description: Value at the requested scope.
      type: str
      sample: "30"
    default_value:
      description: Default value.
      type: str
      sample: "60"
    scope:
      description: Scope of the value (V(cluster), V(zone), ...); absent for global values on some versions.
      type: str
      sample: cluster
    category:
      description: Category of the key.
      type: str
      sample: Advanced
    description:
      description: What the key does.
      type: str
    is_dynamic:
      description: Whether a change takes effect without a restart.
      type: bool
    zone:
      description: Name of the zone scope, when given.
      type: str
    cluster:
      description: Name of the cluster scope, when given.
      type: str
    storage:
      description: Name of the storage pool scope, when given.
      type: str
    account:
      description: Name of the account scope, when given.
      type: str
    domain:
      description: Path of the domain scope, when given.
      type: str
diff:
  description: The setting before and after the change.
  returned: success
  type: dict
  sample: {"before": {"name": "ping.interval", "value": "60"}, "after": {"name": "ping.interval", "value": "30"}}
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    ACCOUNT,
    CLUSTER,
    CONFIGURATION,
    DOMAIN,
    STORAGE_POOL,
    CloudStackResource,
    ResourceError,
    looks_like_uuid,
)


def config_string(value):
    """The string CloudStack stores for a YAML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class Configuration(CloudStackResource):
    kind = CONFIGURATION
    update_command = "updateConfiguration"
    identity = ("name",)
    _domain = None

    def domain(self):
        wanted = self.params["domain"] or "ROOT"
        if looks_like_uuid(wanted):
            return self.lookup(DOMAIN, wanted, listall=True)
        if self._domain is None:
            # Domains are found by path (ROOT/sales) or plain name, so match client-side.
            domains = [item for item in self.list(DOMAIN, listall=True)
                       if wanted.lower() in (str(item.get("path", "")).lower(), str(item.get("name", "")).lower())]
            if not domains:
                raise ResourceError("domain '%s' not found" % wanted)
            if len(domains) > 1:
                raise ResourceError("domain '%s' is ambiguous; use its path or id" % wanted)
            self._domain = domains[0]
        return self._domain

    def scope(self):
        """(request parameter, option, object) of the scope the options designate, or None for global."""
        zone_filter = {"zoneid": self.zone()["id"]} if self.params["zone"] else {}
        if self.params["cluster"]:
            return "clusterid", "cluster", self.lookup(CLUSTER, self.params["cluster"], **zone_filter)
        if self.params["storage"]:
            return "storageid", "storage", self.lookup(STORAGE_POOL, self.params["storage"], **zone_filter)
        if self.params["account"]:
            domain = self.domain()
            return "accountid", "account", self.lookup(ACCOUNT, self.params["account"],
                                                       " in domain '%s'" % domain.get("path", domain["name"]),
                                                       domainid=domain["id"])
        if self.params["domain"]:
            return "domainid", "domain", self.domain()
        if self.params["zone"]:
            return "zoneid", "zone", self.zone()
        return None

    def scope_params(self):
        scope = self.scope()
        return {scope[0]: scope[2]["id"]} if scope else {}

    def find(self):
        found = [item for item in self.list(CONFIGURATION, name=self.params["name"], **self.scope_params())
                 if item.get("name") == self.params["name"]]
        if not found:
            scope = self.scope()
            raise ResourceError("configuration '%s' not found%s" % (
                self.params["name"], " at %s scope" % scope[1] if scope else ""))
        return found[0]

    def desired(self):
        return {"name": self.params["name"], "value": config_string(self.params["value"])}

    def execute(self):
        result = super(Configuration, self).execute()
        scope = self.scope()
        if scope:
            name = scope[2].get("path", scope[2].get("name")) if scope[1] == "domain" else scope[2].get("name")
            for state in (result["diff"]["before"], result["diff"]["after"]):
                state[scope[1]] = name
        return result

    def update(self, current, changes):
        answer = self.call("updateConfiguration", name=self.params["name"], value=changes["value"][1],
                           **self.scope_params())
        return dict(current, **self.unwrap(answer))


def main():
    Configuration(argument_spec=dict(
        name=dict(type="str", required=True),
        value=dict(type="raw", required=True),
        zone=dict(type="str"),
        cluster=dict(type="str"),
        storage=dict(type="str"),
        account=dict(type="str"),
        domain=dict(type="str"),
    ), mutually_exclusive=[("cluster", "storage", "account")]).run()


if __name__ == "__main__":
    main()
