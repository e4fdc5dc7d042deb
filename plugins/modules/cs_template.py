#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_template
short_description: Register templates on a CloudStack-compatible cloud and wait until they are ready
description:
  - Register a template from an http(s) URL in a zone, or remove it. A template is found by its O(name) in
    its O(zone); registering one that exists changes only what CloudStack can change in place (display text,
    OS type, public and featured flags).
  - The cloud downloads the image onto the zone's image store. With O(wait=true) (the default) the module
    waits until the template is ready and fails with the cloud's reason when the download failed (an HTTP
    error, a checksum mismatch, a format other than O(format)).
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the template.
    type: str
    required: true
  zone:
    description: Zone the template is downloaded to (name or UUID).
    type: str
    required: true
  url:
    description: http or https URL of the image. Required to register the template.
    type: str
  display_text:
    description: Description of the template; the name when not given at registration.
    type: str
    aliases: [displaytext]
  format:
    description: Format of the image.
    type: str
    choices: [QCOW2, RAW]
    default: QCOW2
  hypervisor:
    description: Hypervisor the template is for.
    type: str
    default: KVM
  os_type:
    description: OS type of the template, its description as C(listOsTypes) shows it or its UUID. Required to
      register the template.
    type: str
  checksum:
    description:
      - Checksum of the image, checked after the download. An MD5 digest, or the algorithm in braces
        followed by the digest, for example C({SHA-256}9f86d0...).
      - Used at registration only; a template registered with another checksum is left as it is.
    type: str
  is_public:
    description: Whether every account may use the template.
    type: bool
  is_featured:
    description: Whether the template is featured (administrators only).
    type: bool
  template_filter:
    description: Which templates are searched for O(name) (C(listTemplates)' templatefilter).
    type: str
    default: self
    choices: [featured, self, selfexecutable, sharedexecutable, executable, community, all]
  wait:
    description: Wait until the template is ready (downloaded), up to O(wait_timeout) seconds.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the download, and for the removal's job.
    type: int
    default: 1800
  state:
    description: Whether the template should exist.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Register a Debian image and wait until it is downloaded
  stackwright.cloudstack.cs_template:
    name: debian-12
    zone: zone1
    url: https://images.example.org/debian-12-genericcloud-amd64.qcow2
    os_type: Debian GNU/Linux 12 (64-bit)
    checksum: "{SHA-512}0123abcd..."
    is_public: true

- name: Remove it
  stackwright.cloudstack.cs_template:
    name: debian-12
    zone: zone1
    state: absent
"""

RETURN = r"""
template:
  description: The template as the cloud holds it in O(zone) (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the template.
      type: str
    name:
      description: Name of the template.
      type: str
    display_text:
      description: Description of the template.
      type: str
    format:
      description: Format of the image.
      type: str
      sample: QCOW2
    os_type:
      description: OS type.
      type: str
      sample: Debian GNU/Linux 12 (64-bit)
    zone:
      description: Name of the zone.
      type: str
    is_ready:
      description: Whether guests can be deployed from it (the download is complete).
      type: bool
    status:
      description: Download status, for example C(45% Downloaded), C(Download Complete) or why it failed.
      type: str
    size:
      description: Size of the disk a guest gets from it, in bytes.
      type: int
diff:
  description: The template before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

import time

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    TEMPLATE,
    CloudStackResource,
    ResourceError,
    looks_like_uuid,
)

POLL_INTERVAL = 3
FAILED_PREFIX = "Download failed"


class Template(CloudStackResource):
    kind = TEMPLATE
    create_command = "registerTemplate"
    update_command = "updateTemplate"
    delete_command = "deleteTemplate"
    identity = ("name", "zone")
    required_for_create = ("url", "os_type")

    def find_filters(self):
        return dict(self.scope_ids(), templatefilter=self.params["template_filter"])

    def desired(self):
        want = super(Template, self).desired()
        if "os_type" in want and looks_like_uuid(want["os_type"]):
            want["os_type"] = self.os_type()["description"]
        return want

    def os_type(self):
        """The OS type O(os_type) names: by UUID, or by description (case-insensitive)."""
        value = self.params["os_type"]
        key = ("os type", value)
        if key not in self._lookups:
            if looks_like_uuid(value):
                found = self.client.list("listOsTypes", "ostype", id=value)
            else:
                found = [o for o in self.client.list("listOsTypes", "ostype")
                         if str(o.get("description", "")).lower() == value.lower()]
            if len(found) != 1:
                raise ResourceError("OS type '%s' not found; listOsTypes shows the valid descriptions" % value)
            self._lookups[key] = found[0]
        return self._lookups[key]

    def compare(self, want, current):
        changes = super(Template, self).compare(want, current)
        if "os_type" in changes and str(want["os_type"]).lower() == str(current.get("os_type", "")).lower():
            del changes["os_type"]
        return changes

    def request_params(self, values):
        params = super(Template, self).request_params(values)
        if "ostypeid" in params:
            params["ostypeid"] = self.os_type()["id"]
        return params

    def predict_create(self, want):
        predicted = super(Template, self).predict_create(want)
        predicted.update(is_ready=False, status="0% Downloaded")
        return predicted

    def create(self, want):
        params = self.create_params(want)
        params.setdefault("displaytext", self.params["name"])
        return self.unwrap(self.call(self.create_command, **params))

    def execute(self):
        result = super(Template, self).execute()
        template = result[self.result_key]
        if (self.state == "present" and self.params["wait"] and not self.module.check_mode
                and template and not template.get("is_ready")):
            ready = self.wait_ready(template["id"])
            result[self.result_key] = ready
            result["diff"]["after"] = ready
            result.update(self.kind.flat_keys(ready, self.result_key))
        return result

    def wait_ready(self, template_id):
        """The template once ready; fails with the cloud's status when its download failed."""
        deadline = time.time() + self.wait_timeout
        status = None
        while True:
            found = self.list(self.kind, id=template_id, templatefilter=self.params["template_filter"],
                              **self.scope_ids())
            if not found:
                raise ResourceError("template '%s' disappeared while it downloaded" % self.params["name"])
            template = self.to_result(found[0])
            status = template.get("status") or ""
            if template.get("is_ready"):
                return template
            if status.startswith(FAILED_PREFIX):
                raise ResourceError("template '%s': %s" % (self.params["name"], status))
            if time.time() >= deadline:
                raise ResourceError("template '%s' is not ready after %d s (status: %s); raise wait_timeout or "
                                    "set wait=false" % (self.params["name"], self.wait_timeout, status))
            time.sleep(POLL_INTERVAL)


def main():
    Template(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str", required=True),
        url=dict(type="str"),
        display_text=dict(type="str", aliases=["displaytext"]),
        format=dict(type="str", default="QCOW2", choices=["QCOW2", "RAW"]),
        hypervisor=dict(type="str", default="KVM"),
        os_type=dict(type="str"),
        checksum=dict(type="str"),
        is_public=dict(type="bool"),
        is_featured=dict(type="bool"),
        template_filter=dict(type="str", default="self", choices=[
            "featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=1800),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )).run()


if __name__ == "__main__":
    main()
