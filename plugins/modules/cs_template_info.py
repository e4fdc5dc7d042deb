#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_template_info
short_description: List templates of a CloudStack-compatible cloud
description:
  - Returns templates, one entry per zone a template is downloaded to, with its download status.
author: Stackwright maintainers (@stackwright)
options:
  name:
    description: Only the template with this name (case-insensitive).
    type: str
  zone:
    description: Only templates of this zone (name or UUID).
    type: str
  template_filter:
    description: Which templates are listed (C(listTemplates)' templatefilter).
    type: str
    default: executable
    choices: [featured, self, selfexecutable, sharedexecutable, executable, community, all]
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
  - stackwright.cloudstack.cloudstack.info_attributes
"""

EXAMPLES = r"""
- name: List the templates guests can be deployed from in a zone
  stackwright.cloudstack.cs_template_info:
    zone: zone1
  register: result
"""

RETURN = r"""
templates:
  description: Matching templates, with the keys M(stackwright.cloudstack.cs_template) returns.
  returned: success
  type: list
  elements: dict
  sample: [{"id": "6b1f0c52-3b8e-4b8a-9d8e-0e9d3f1c2a4b", "name": "debian-12", "format": "QCOW2",
            "is_ready": true, "status": "Download Complete", "zone": "zone1", "size": 2147483648}]
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import (
    TEMPLATE,
    CloudStackInfo,
    info_argument_spec,
)


class TemplateInfo(CloudStackInfo):
    kind = TEMPLATE
    filters = {"template_filter": "templatefilter"}


def main():
    spec = info_argument_spec("zone")
    spec.update(template_filter=dict(type="str", default="executable", choices=[
        "featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all"]))
    TemplateInfo(argument_spec=spec).run()


if __name__ == "__main__":
    main()
