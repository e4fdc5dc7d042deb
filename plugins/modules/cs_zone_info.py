#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_zone_info
short_description: List zones of a CloudStack-compatible cloud
description:
  - Returns zones, all of them or those matching the filters.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the zone with this name (case-insensitive).
    type: str
    aliases: [zone]
  id:
    description: Only the zone with this UUID.
    type: str
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List all zones
  stackwright.cloudstack.cs_zone_info:
  register: result

- name: Look up one zone
  stackwright.cloudstack.cs_zone_info:
    name: zone1
  register: result
"""

RETURN = r"""
zones:
  description: Matching zones, with the keys M(stackwright.cloudstack.cs_zone) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "04589590-ac63-4ffc-93f5-b698b8ac38b6", "name": "zone1", "allocation_state": "Enabled"}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    ZONE,
    CloudStackInfo,
)


class ZoneInfo(CloudStackInfo):
    kind = ZONE
    filters = {"id": "id"}
    option_aliases = {"name": ["zone"]}


def main():
    ZoneInfo(argument_spec=dict(name=dict(type="str"), id=dict(type="str"))).run()


if __name__ == "__main__":
    main()
