"""CloudStack's admin/user split of response fields: what a caller who is not a root admin
does not see. CloudStack fills these only in an admin's (ResponseView.Full) answer; here every
answer passes through `restricted` on its way out, whichever command produced it."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# Response object name -> fields only a root admin sees.
ADMIN_ONLY_FIELDS = {
    # DataCenterJoinDaoImpl: DNS servers and the guest CIDR are infrastructure details.
    "zone": frozenset({"dns1", "dns2", "ip6dns1", "ip6dns2", "internaldns1", "internaldns2",
                       "guestcidraddress"}),
}


def restricted(response: str | None, body: T) -> T:
    """`body` (one object or a list of them, of response type `response`) as a caller who is
    not a root admin sees it."""
    hidden = ADMIN_ONLY_FIELDS.get(response)
    if not hidden:
        return body
    if isinstance(body, list):
        return [restricted(response, item) for item in body]
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in hidden}
    return body
