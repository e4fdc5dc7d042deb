#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_image_store
short_description: Manage secondary storage (image stores) on a CloudStack-compatible cloud
description:
  - Add and remove image stores (secondary storage) of a zone.
  - CloudStack cannot change an image store in place; a different O(url) or O(provider) is an error unless
    O(force_recreate=true), which removes the store and adds it again.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Name of the image store.
    type: str
    required: true
  zone:
    description: Zone of the image store (name or UUID). Without it the store is region-wide.
    type: str
  url:
    description: Location of the store, for example C(nfs://192.0.2.10/export/secondary). Required to add it.
    type: str
  provider:
    description: Image store provider.
    type: str
    default: NFS
  force_recreate:
    description: Remove and add the store again when O(url) or O(provider) differ.
    type: bool
    default: false
  state:
    description: Whether the store should exist.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.attributes
"""

EXAMPLES = r"""
- name: Ensure the zone has NFS secondary storage
  stackwright.cloudstack.cs_image_store:
    name: secondary1
    zone: zone1
    url: nfs://192.0.2.10/export/secondary

- name: Remove it
  stackwright.cloudstack.cs_image_store:
    name: secondary1
    zone: zone1
    state: absent
"""

RETURN = r"""
image_store:
  description: The image store as CloudStack holds it (before removal when O(state=absent)).
  returned: success
  type: dict
  contains:
    id:
      description: UUID of the store.
      type: str
      sample: 5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9
    name:
      description: Name of the store.
      type: str
      sample: secondary1
    url:
      description: URL of the store, as given.
      type: str
      sample: nfs://192.0.2.10/export/secondary
    zone:
      description: Name of the zone.
      type: str
    zone_id:
      description: UUID of the zone.
      type: str
    provider:
      description: Provider name.
      type: str
      sample: NFS
    protocol:
      description: Protocol, the URL's scheme.
      type: str
      sample: nfs
    scope:
      description: Scope of the store.
      type: str
      sample: ZONE
diff:
  description: The store before and after the change (empty dict when it did not exist or no longer exists).
  returned: success
  type: dict
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    IMAGE_STORE,
    CloudStackResource,
    ResourceError,
    values_differ,
)


class ImageStore(CloudStackResource):
    kind = IMAGE_STORE
    create_command = "addImageStore"
    delete_command = "deleteImageStore"
    required_for_create = ("url",)

    def predict_create(self, want):
        predicted = super(ImageStore, self).predict_create(want)
        predicted.update(protocol=self.params["url"].split(":", 1)[0].lower(),
                         scope="ZONE" if self.params["zone"] else "REGION")
        return predicted

    def compare(self, want, current):
        # url and provider cannot be updated; a difference means recreating the store.
        changes = dict((key, (current.get(key), want[key])) for key in ("url", "provider")
                       if key in want and values_differ(want[key], current.get(key)))
        if changes and not self.params["force_recreate"]:
            raise ResourceError("image store '%s' exists with %s; CloudStack cannot change it in place, "
                                "set force_recreate=true or remove it first"
                                % (self.params["name"], ", ".join("%s %s" % (key, changes[key][0])
                                                                  for key in sorted(changes))))
        return changes

    def update(self, current, changes):
        self.delete(current)
        return self.create(self.desired())


def main():
    ImageStore(argument_spec=dict(
        name=dict(type="str", required=True),
        zone=dict(type="str"),
        url=dict(type="str"),
        provider=dict(type="str", default="NFS"),
        force_recreate=dict(type="bool", default=False),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )).run()


if __name__ == "__main__":
    main()
