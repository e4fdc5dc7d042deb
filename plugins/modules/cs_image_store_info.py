#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_image_store_info
short_description: List image stores (secondary storage) of a CloudStack-compatible cloud
description:
  - Returns image stores, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the store with this name (case-insensitive).
    type: str
  zone:
    description: Only stores of this zone (name or UUID).
    type: str
  protocol:
    description: Only stores reached over this protocol, for example V(nfs).
    type: str
  provider:
    description: Only stores of this provider, for example V(NFS).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the image stores of a zone
  stackwright.cloudstack.cs_image_store_info:
    zone: zone1
  register: result
"""

RETURN = r"""
image_stores:
  description:
    - Matching stores, with the keys M(stackwright.cloudstack.cs_image_store) returns.
    - Each also carries C(provider_name), the name C(ngine_io.cloudstack) uses for O(provider).
  returned: success
  type: list
  elements: dict
  sample: [{"id": "6b1f0c52-3b8e-4b8a-9d8e-0e9d3f1c2a4b", "name": "secondary1", "url": "nfs://192.0.2.10/export/secondary",
            "provider": "NFS", "provider_name": "NFS", "protocol": "nfs", "scope": "ZONE", "zone": "zone1"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    IMAGE_STORE,
    CloudStackInfo,
    info_argument_spec,
)


class ImageStoreInfo(CloudStackInfo):
    kind = IMAGE_STORE
    filters = {"protocol": "protocol", "provider": "provider"}


def main():
    spec = info_argument_spec("zone")
    spec.update(protocol=dict(type="str"), provider=dict(type="str"))
    ImageStoreInfo(argument_spec=spec).run()


if __name__ == "__main__":
    main()
