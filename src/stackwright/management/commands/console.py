"""Console access: createConsoleEndpoint (CloudStack 4.18+).

The answer names the console proxy's noVNC page with a one-time token bound to the VM
(services/console.py), and the WebSocket the page connects to. The proxy is served by the
engine itself (api/console.py); `consoleproxy.url.domain` names the host in the URL.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..api.params import Param, String, Uuid
from ..api.registry import api_command
from ..persistence.models import VmInstance
from ..services.vms import RUNNING

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..context import Context

CONSOLE_PAGE = "console/vnc.html"
WEBSOCKET_PATH = "console/websockify"
# Hypervisors whose guests have a VNC display the proxy reaches.
WITH_CONSOLE = ("KVM",)


def url_host(domain: str | None, address: str) -> str:
    """The host a console URL names: `consoleproxy.url.domain` when set (``*.example.com``
    becomes ``10-1-2-3.example.com`` for the proxy's address 10.1.2.3, as CloudStack does),
    else the proxy's address (bracketed when IPv6)."""
    if domain:
        if domain.startswith("*."):
            return address.replace(".", "-").replace(":", "-") + domain[1:]
        return domain
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]"
    except ValueError:
        pass
    return address


def endpoint_view(scheme: str, host: str, port: int, token: str, extra: str | None) -> dict[str, Any]:
    secure = scheme == "https"
    path = f"{WEBSOCKET_PATH}?token={token}"
    query = urllib.parse.urlencode({"autoconnect": "true", "reconnect": "false", "resize": "scale",
                                    "encrypt": "1" if secure else "0", "path": path})
    websocket = {"token": token, "host": host, "port": str(port), "path": "/" + WEBSOCKET_PATH}
    if extra:
        websocket["extra"] = extra
    return {"success": True, "url": f"{scheme}://{host}:{port}/{CONSOLE_PAGE}?{query}", "websocket": websocket}


@api_command(
    "createConsoleEndpoint", response="consoleendpoint", admin_only=False, since="4.18.0",
    cmd_class="org.apache.cloudstack.api.command.user.consoleproxy.CreateConsoleEndpointCmd", params=[
        Param("virtualmachineid", Uuid(VmInstance, owned=True), required=True,
              description="ID of the VM"),
        Param("token", String(), description="(optional) extra security token, valid when the extra validation is "
                                             "enabled; passed back in the answer's websocket extra"),
    ],
    fields=(("success", "true if the console endpoint is generated properly", "boolean"),
            ("details", "details in case of an error"),
            ("url", "the console url"),
            ("websocket", "the console websocket options", "map")))
def create_console_endpoint(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Create a console endpoint to connect to a VM console"""
    vm = ctx.vms.check_access(p.virtualmachineid)
    if vm.hypervisor not in WITH_CONSOLE:
        return {"success": False, "details": f"VM {vm.instance_name} runs on {vm.hypervisor}, whose guests have no "
                                             f"console; consoles are available for {', '.join(WITH_CONSOLE)} guests"}
    if vm.state != RUNNING or vm.host_id is None:
        return {"success": False, "details": f"VM {vm.instance_name} is {vm.state}; a console is available while it "
                                             f"is Running"}
    served = ctx.engine.console_endpoint
    if served is None:
        return {"success": False, "details": "the console proxy is not running on this management server"}
    scheme, address, port = served
    grant = ctx.engine.consoles.issue(vm.id, vm.uuid, float(ctx.settings.typed("consoleproxy.token.timeout")))
    host = url_host(ctx.settings.get("consoleproxy.url.domain"), address)
    return endpoint_view(scheme, host, port, grant.token, p.token)
