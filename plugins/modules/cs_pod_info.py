#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_pod_info
short_description: List pods of a CloudStack-compatible cloud
description:
  - Returns pods, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the pod with this name (case-insensitive).
    type: str
  zone:
    description: Only pods of this zone (name or UUID).
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the pods of a zone
  stackwright.cloudstack.cs_pod_info:
    zone: zone1
  register: result
"""

RETURN = r"""
pods:
  description: Matching pods, with the keys M(stackwright.cloudstack.cs_pod) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "4f2b4c8e-2d6a-4d4f-9bfa-0a2f7c1e8d11", "name": "pod1", "zone": "zone1", "gateway": "10.0.0.1"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    POD,
    CloudStackInfo,
    info_argument_spec,
)


class PodInfo(CloudStackInfo):
    kind = POD


def main():
    PodInfo(argument_spec=info_argument_spec("zone")).run()


if __name__ == "__main__":
    main()
