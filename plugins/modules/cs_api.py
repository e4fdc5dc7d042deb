#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: cs_api
short_description: Call any command of a CloudStack-compatible API
description:
  - Sends one signed API command with the given parameters and returns the answer; for commands no other module
    covers.
  - Asynchronous commands are followed to the end of their job; the job's result is returned.
  - The module cannot tell whether a command changed anything. Read commands (names starting with C(list), C(get)
    or C(query)) report no change; every other command reports a change. Use C(changed_when) to refine it.
author: Stackwright maintainers (@stackwright)
options:
  command:
    description: Name of the API command, for example V(listCapabilities) or V(updateConfiguration).
    type: str
    required: true
  args:
    description:
      - Parameters of the command. Booleans become V(true)/V(false), lists are joined with commas and dicts (or lists
        of dicts) become C(name[0].key=value) maps.
    type: dict
    default: {}
    aliases: [params]
  fetch_list:
    description:
      - For a list command, fetch every page and return the items of the answer's list key in RV(result) instead of
        the first page's answer. C(page) and C(pagesize) in O(args) are then ignored.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the job of an asynchronous command.
    type: int
    default: 300
extends_documentation_fragment:
  - stackwright.cloudstack.cloudstack
attributes:
  check_mode:
    support: partial
    description: Read commands run; other commands are not sent.
    details: In check mode only commands whose names start with C(list), C(get) or C(query) run; every other command
      is skipped and reported as a change, since the module cannot predict its effect.
  diff_mode:
    support: none
    description: The module does not know the state before a command.
"""

EXAMPLES = r"""
- name: Read the API's capabilities
  stackwright.cloudstack.cs_api:
    command: listCapabilities
  register: caps

- name: All Routing hosts, every page
  stackwright.cloudstack.cs_api:
    command: listHosts
    args:
      type: Routing
    fetch_list: true
  register: hosts

- name: Set a global setting (prefer stackwright.cloudstack.cs_configuration for idempotence)
  stackwright.cloudstack.cs_api:
    command: updateConfiguration
    args:
      name: expunge.delay
      value: "60"
"""

RETURN = r"""
result:
  description:
    - The answer under the command's response key, the job result of an asynchronous command, or with
      O(fetch_list=true) the list of items.
    - Empty in check mode for a command that was skipped.
  returned: success
  type: raw
  sample: {"capability": {"apilimitmax": 0, "cloudstackversion": "4.20.0.0"}}
command:
  description: The command that was sent (or skipped in check mode).
  returned: success
  type: str
  sample: listCapabilities
"""

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_resource import CloudStackModule

READ_PREFIXES = ("list", "get", "query")


def is_read_command(command):
    return command.startswith(READ_PREFIXES)


def list_key(answer):
    """The items key of a list answer: the one key besides count holding a list."""
    keys = [key for key, value in answer.items() if isinstance(value, list)]
    return keys[0] if len(keys) == 1 else None


class Api(CloudStackModule):

    def execute(self):
        command = self.params["command"]
        args = self.params["args"] or {}
        read = is_read_command(command)
        if self.module.check_mode and not read:
            return {"changed": True, "command": command, "result": {},
                    "msg": "%s skipped in check mode: only read commands run" % command}
        if self.params["fetch_list"]:
            # Pages are the module's business here.
            args = dict((key, value) for key, value in args.items() if key not in ("page", "pagesize"))
            first = self.client.request(command, **args)
            key = list_key(first)
            result = self.client.list(command, key, **args) if key else []
        else:
            result = self.call(command, **args)
        return {"changed": not read, "command": command, "result": result}


def main():
    Api(argument_spec=dict(
        command=dict(type="str", required=True),
        args=dict(type="dict", default={}, aliases=["params"]),
        fetch_list=dict(type="bool", default=False),
        wait_timeout=dict(type="int", default=300),
    )).run()


if __name__ == "__main__":
    main()
