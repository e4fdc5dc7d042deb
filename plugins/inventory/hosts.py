# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: hosts
short_description: Hypervisor hosts of a CloudStack-compatible cloud as inventory
description:
  - Reads the cloud's hypervisor hosts (C(listHosts) with C(type=Routing)) and adds each under its name, with
    C(ansible_host) set to the host's address.
  - Groups every host by zone, pod, cluster, hypervisor, state and resource state, for example C(zone_zone1),
    C(pod_pod1), C(cluster_cluster1), C(hypervisor_kvm), C(state_up) and C(resource_state_enabled). Values are
    lower-cased; characters not valid in group names are handled as the C(TRANSFORM_INVALID_GROUP_CHARS) setting
    says.
  - The host's fields become host variables with the O(hostvar_prefix), for example C(cs_id), C(cs_zone) or
    C(cs_resource_state), for use in O(compose), O(groups) and O(keyed_groups).
  - The inventory source is a YAML file whose name ends in C(cloudstack_hosts.yml) or C(cloudstack_hosts.yaml)
    (C(.yml) and C(.yaml) alone are accepted when the file names this plugin).
author: Stackwright maintainers (@stackwright)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: Marks the file as a source for this plugin.
    type: str
    required: true
    choices: [stackwright.cloudstack.hosts]
  api_url:
    description:
      - URL of the CloudStack API, for example C(http://127.0.0.1:8080/client/api).
      - Without it, C(endpoint) of O(api_config_file) is used.
    type: str
    env:
      - name: CLOUDSTACK_ENDPOINT
  api_key:
    description: API key of the calling user; without it, C(key) of O(api_config_file).
    type: str
    env:
      - name: CLOUDSTACK_KEY
  api_secret:
    description: Secret key of the calling user; without it, C(secret) of O(api_config_file).
    type: str
    env:
      - name: CLOUDSTACK_SECRET
  api_timeout:
    description: Seconds to wait for one HTTP answer. Defaults to 10.
    type: int
    env:
      - name: CLOUDSTACK_TIMEOUT
  api_http_method:
    description: HTTP method of the requests. Defaults to V(get).
    type: str
    choices: [get, post]
    env:
      - name: CLOUDSTACK_METHOD
  api_config_file:
    description:
      - Path of a C(cloudstack.ini) with C(endpoint), C(key) and C(secret) in the O(api_region) section.
      - Without it, C(./cloudstack.ini) and C(~/.cloudstack.ini) are tried when a connection setting is missing.
    type: path
    env:
      - name: CLOUDSTACK_CONFIG
  api_region:
    description: Section of O(api_config_file) to read.
    type: str
    default: cloudstack
    env:
      - name: CLOUDSTACK_REGION
  api_verify_ssl_cert:
    description: CA bundle to verify the TLS certificate of an C(https) O(api_url) with.
    type: str
    env:
      - name: CLOUDSTACK_VERIFY
  validate_certs:
    description: Verify the TLS certificate of an C(https) O(api_url).
    type: bool
    default: true
  filters:
    description:
      - Only hosts matching all of these. Keys are V(zone), V(pod) and V(cluster) (names or UUIDs), V(hypervisor),
        V(state) and V(resource_state), or any other C(listHosts) parameter, sent as it is.
      - Zone, pod and cluster names are compared without regard to case; other values exactly, as the API does.
    type: dict
    default: {}
  hostvar_prefix:
    description: Prefix of the host variables made from the host's fields.
    type: str
    default: cs_
"""

EXAMPLES = r"""
# inventory/cloud.cloudstack_hosts.yml
plugin: stackwright.cloudstack.hosts
api_config_file: /etc/cloudstack/management/cloudstack.ini
filters:
  zone: zone1
  resource_state: Enabled
compose:
  ansible_user: "'root'"
keyed_groups:
  - key: cs_host_tags
    prefix: tag
groups:
  needs_attention: cs_state != 'Up'
"""

from ansible.errors import AnsibleError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import (
    CloudStackClient,
    CloudStackError,
    resolve_connection,
)
from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    CLUSTER,
    HOST,
    POD,
    ZONE,
    looks_like_uuid,
)

# Filter -> (listHosts parameter, kind to resolve a name with, or None).
NAMED_FILTERS = {"zone": ("zoneid", ZONE), "pod": ("podid", POD), "cluster": ("clusterid", CLUSTER)}
SIMPLE_FILTERS = {"hypervisor": "hypervisor", "state": "state", "resource_state": "resourcestate"}
# Result key of HOST -> group name prefix.
GROUP_BY = (("zone", "zone"), ("pod", "pod"), ("cluster", "cluster"), ("hypervisor", "hypervisor"),
            ("state", "state"), ("resource_state", "resource_state"))


def host_groups(host):
    """Group names (not yet sanitised) of one host result."""
    return ["%s_%s" % (prefix, str(host[key]).lower()) for key, prefix in GROUP_BY if host.get(key)]


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = "stackwright.cloudstack.hosts"

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        if path.endswith(("cloudstack_hosts.yml", "cloudstack_hosts.yaml")):
            return True
        if path.endswith((".yml", ".yaml")):
            try:
                with open(path) as handle:
                    return any(line.split("#")[0].strip() in ("plugin: %s" % self.NAME,
                                                              "plugin: '%s'" % self.NAME,
                                                              'plugin: "%s"' % self.NAME) for line in handle)
            except OSError:
                return False
        return False

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            client = self._client()
            hosts = [HOST.to_result(item) for item in client.list("listHosts", "host", **self._list_filters(client))]
        except CloudStackError as exc:
            raise AnsibleError("%s: %s" % (self.NAME, exc))
        for host in sorted(hosts, key=lambda item: item.get("name", "")):
            self._add(host)

    def _client(self):
        settings = resolve_connection(dict(
            (option, self.get_option(option)) for option in (
                "api_url", "api_key", "api_secret", "api_timeout", "api_http_method", "api_config_file",
                "api_region", "api_verify_ssl_cert", "validate_certs")))
        return CloudStackClient(settings["endpoint"], settings["key"], settings["secret"],
                                timeout=settings["timeout"], method=settings["method"],
                                validate_certs=settings["validate_certs"], ca_path=settings["verify"])

    def _list_filters(self, client):
        params = {"type": "Routing"}
        for key, value in (self.get_option("filters") or {}).items():
            if key in NAMED_FILTERS:
                param, kind = NAMED_FILTERS[key]
                params[param] = self._resolve(client, kind, value, params)
            else:
                params[SIMPLE_FILTERS.get(key, key)] = value
        return params

    @staticmethod
    def _resolve(client, kind, value, scope):
        if looks_like_uuid(value):
            return value
        scope = dict((key, scope[key]) for key in ("zoneid", "podid") if key in scope)
        matches = [item for item in client.list(kind.list_command, kind.item_key, name=value, **scope)
                   if str(item.get("name", "")).lower() == str(value).lower()]
        if len(matches) != 1:
            raise CloudStackError("filter %s '%s' matches %d %ss; use its UUID"
                                  % (kind.label, value, len(matches), kind.label))
        return matches[0]["id"]

    def _add(self, host):
        name = host["name"]
        self.inventory.add_host(name)
        if host.get("ip_address"):
            self.inventory.set_variable(name, "ansible_host", host["ip_address"])
        prefix = self.get_option("hostvar_prefix")
        for key, value in host.items():
            self.inventory.set_variable(name, prefix + key, value)
        for group in host_groups(host):
            group = self.inventory.add_group(self._sanitize_group_name(group))
            self.inventory.add_child(group, name)
        hostvars = self.inventory.get_host(name).get_vars()
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
