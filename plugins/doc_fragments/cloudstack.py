# -*- coding: utf-8 -*-
# Copyright (c) Stackwright maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment(object):

    # Connection options shared by every cs_* module.
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - URL of the CloudStack API, for example C(http://127.0.0.1:8080/client/api).
      - Falls back to the E(CLOUDSTACK_ENDPOINT) environment variable, then to O(api_config_file).
    type: str
  api_key:
    description:
      - API key of the calling user.
      - Falls back to E(CLOUDSTACK_KEY), then to O(api_config_file).
    type: str
  api_secret:
    description:
      - Secret key of the calling user, used to sign every request.
      - Falls back to E(CLOUDSTACK_SECRET), then to O(api_config_file).
    type: str
  api_timeout:
    description:
      - Seconds to wait for one HTTP answer. Defaults to 10.
      - Falls back to E(CLOUDSTACK_TIMEOUT), then to C(timeout) in O(api_config_file).
    type: int
  api_http_method:
    description:
      - HTTP method of the requests. Defaults to V(get).
      - Falls back to E(CLOUDSTACK_METHOD), then to C(method) in O(api_config_file).
    type: str
    choices: [get, post]
  api_config_file:
    description:
      - Path of a C(cloudstack.ini) with C(endpoint), C(key) and C(secret) in the O(api_region) section,
        as written by C(stackwright-setup-databases).
      - Falls back to E(CLOUDSTACK_CONFIG); without it C(./cloudstack.ini) and C(~/.cloudstack.ini) are tried
        when a connection setting is missing.
      - Explicit options and environment variables win over the file.
    type: path
  api_region:
    description:
      - Section of O(api_config_file) to read.
      - Falls back to E(CLOUDSTACK_REGION).
    type: str
    default: cloudstack
  api_verify_ssl_cert:
    description:
      - CA bundle (a PEM file) to verify the TLS certificate of an C(https) O(api_url) with, instead of the
        system's CAs.
      - Falls back to E(CLOUDSTACK_VERIFY), then to C(verify) in O(api_config_file).
    type: str
  validate_certs:
    description:
      - Verify the TLS certificate of an C(https) O(api_url).
      - Falls back to E(CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY), where a true value turns verification off, then to
        C(dangerous_no_tls_verify) in O(api_config_file).
    type: bool
    default: true
  poll_async:
    description:
      - Accepted for playbooks written for C(ngine_io.cloudstack) and ignored; asynchronous jobs are always followed
        to their end (within O(ignore:wait_timeout) where the module has it).
    type: bool
    default: true
notes:
  - All cs_* modules belong to the C(stackwright.cloudstack.cloudstack) action group, so the connection options can be
    set once with C(module_defaults).
  - Requests use signature version 3 with an expiry ten minutes ahead. A V(401) answer means the key, the secret or
    the clock of the machine running the module is wrong.
  - HTTP and TLS go through ansible-core's C(open_url), so proxies set in the environment apply.
  - Besides its nested object, a module that manages or lists one object returns the object's keys flat at the top
    level of its result, with the names C(ngine_io.cloudstack) uses where they differ (for example both
    C(security_groups_enabled) and C(securitygroups_enabled) for a zone). See C(docs/migrating-from-ngine_io.md).
"""

    # Check mode and diff attributes shared by every cs_* module that changes something.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
    description: In check mode nothing is changed; the returned object is the one the API would hold afterwards.
  diff_mode:
    support: full
    description: Returns the object before and after the change.
"""

    # Attributes of the read-only *_info modules.
    INFO_ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: The module only reads.
"""
