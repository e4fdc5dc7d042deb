"""A guest's console in a real browser: an engine, `stackwright-agent` with the libvirt driver on
qemu:///system (its management address 127.0.0.1), a guest of the Blank disk template on NFS
primary storage (no OS: SeaBIOS prints that it finds nothing to boot), and headless Chromium
opening the URL createConsoleEndpoint returns.

The guest's VNC display has a password of its own; the browser gets none, the engine's proxy
answers the display's challenge. The screenshot must show the guest's screen (a canvas with
content, not uniform); a used or expired token is refused, with the reason shown by noVNC
and in the WebSocket's close.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from tests.support.browser import Chromium, chromium_binary, png_pixels, run
from tests.support.kvm_cloud import kvm_site

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow]

NOVNC = Path("/usr/share/novnc/vnc.html")
TOKEN_TIMEOUT = 8

CANVAS = """(() => {
  const c = document.querySelector('#noVNC_container canvas');
  const status = ((document.getElementById && document.getElementById('noVNC_status')) || {}).textContent || '';
  const state = document.documentElement ? document.documentElement.className : '';
  if (!c || !c.width || !c.height) return {status, state, width: 0};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const colours = new Set();
  let differ = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    if (colours.size < 256) colours.add(v);
    if (v !== ((d[0] << 16) | (d[1] << 8) | d[2])) differ++;
  }
  const r = c.getBoundingClientRect();
  return {status, state, width: c.width, height: c.height, colours: colours.size, differ,
          rect: [r.left, r.top, r.width, r.height], ratio: window.devicePixelRatio};
})()"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, libvirtd, nfs_server):
    """An engine with one KVM host (the machine's libvirtd, address 127.0.0.1), an NFS pool, an
    Enabled zone, and one running guest with no OS."""
    if chromium_binary() is None or not NOVNC.exists():
        pytest.skip("needs Debian's chromium and novnc packages")
    with kvm_site(tmp_path_factory.mktemp("kvm-console"), libvirtd, nfs_server, "kvm-console") as site:
        api = site.api
        vm = None
        try:
            api.updateConfiguration(name="consoleproxy.token.timeout", value=str(TOKEN_TIMEOUT))
            site.add_host()
            site.add_storage(site.unique)
            site.enable()
            [template] = [t for t in api.listTemplates(templatefilter="all")["template"]
                          if t["name"] == "Blank disk (no OS)"]
            offering = api.createServiceOffering(name="console-" + site.unique, displaytext="console", cpunumber=1,
                                                 cpuspeed=500, memory=128)["serviceoffering"]
            existing = site.virsh("list", "--all", "--name").split()
            vm = api.deployVirtualMachine(zoneid=site.zone["id"], templateid=template["id"],
                                          serviceofferingid=offering["id"], fetch_result=True)["virtualmachine"]
            assert vm["state"] == "Running", "%s\n%s" % (vm, site.diagnostics())
            assert vm["instancename"] not in existing, "a guest %s was already defined on %s" % (
                vm["instancename"], libvirtd.uri)
            site.vm, site.uri = vm, libvirtd.uri
            yield site
        finally:
            if vm is not None:
                try:
                    api.stopVirtualMachine(id=vm["id"], forced=True, fetch_result=True)
                    api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
                except Exception as exc:  # the engine's state is reported, the clean-up goes on
                    print("clean-up of %s failed: %s" % (vm["id"], exc))


def endpoint(cloud):
    answer = cloud.api.createConsoleEndpoint(virtualmachineid=cloud.vm["id"])["consoleendpoint"]
    assert answer["success"] is True, answer
    return answer


def test_the_guest_display_has_a_password_and_listens_on_the_management_address(cloud):
    domain = ET.fromstring(cloud.virsh("dumpxml", "--security-info", cloud.vm["instancename"]))
    graphics = domain.find("devices/graphics")
    assert graphics is not None and graphics.get("type") == "vnc"
    assert graphics.get("listen") == "127.0.0.1"
    assert 5900 <= int(graphics.get("port")) <= 6100
    password = graphics.get("passwd")
    assert password and len(password) == 8
    assert password not in Path(cloud.engine.log_file).read_text(errors="replace")


async def _browse(chrome, url, until, timeout=60.0):
    """Open `url` in a new tab; poll the noVNC page until `until(state)`; (state, screenshot)."""
    async with aiohttp.ClientSession() as session:
        page = await chrome.page(session)
        try:
            await page.navigate(url)
            deadline = time.monotonic() + timeout
            state = None
            while time.monotonic() < deadline:
                state = await page.evaluate(CANVAS)
                if state and until(state):
                    break
                await asyncio.sleep(0.5)
            return state, await page.screenshot()
        finally:
            await page.close()


def _shows_a_screen(state):
    return "noVNC_connected" in state["state"] and state["width"] > 0 and state["differ"] > 0


def _refused(state):
    return "rejected" in state["status"] or "noVNC_disconnected" in state["state"]


def test_the_browser_shows_the_guest_screen_and_a_reused_token_is_refused(cloud):
    answer = endpoint(cloud)
    assert answer["url"].startswith("http://127.0.0.1:%d/console/vnc.html?" % cloud.engine.port)
    chrome = Chromium(cloud.workdir).start()
    try:
        state, shot = run(_browse(chrome, answer["url"], _shows_a_screen))
        (cloud.workdir / "console.png").write_bytes(shot)
        assert state and _shows_a_screen(state), "%s\n%s" % (state, cloud.diagnostics())
        assert state["colours"] >= 2 and state["differ"] >= 100, state
        # The screenshot itself: inside the canvas, the guest's text on its background.
        width, height, pixels = png_pixels(shot)
        ratio = state["ratio"] or 1
        left, top, w, h = (int(v * ratio) for v in state["rect"])
        inside = [pixels[y * width + x][:3] for y in range(max(top, 0), min(top + h, height), 2)
                  for x in range(max(left, 0), min(left + w, width), 2)]
        assert inside, (state, width, height)
        commonest = max(set(inside), key=inside.count)
        others = sum(1 for p in inside if p != commonest)
        assert others / len(inside) > 0.001, "the canvas in the screenshot is uniform %s" % (commonest,)

        # The same URL again: refused, with the reason on the page.
        state, shot = run(_browse(chrome, answer["url"], _refused))
        (cloud.workdir / "console-reused.png").write_bytes(shot)
        assert "already used" in state["status"], state
        assert "noVNC_connected" not in state["state"]
    finally:
        chrome.stop()


async def _raw(url):
    """Connect to the proxy's WebSocket as an RFB client: (the reason of a refusal, close code)."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, protocols=("binary",)) as ws:
        buffer = bytearray()

        async def receive(count):
            while len(buffer) < count:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    return None
                buffer.extend(msg.data)
            data = bytes(buffer[:count])
            del buffer[:count]
            return data

        assert await receive(12) == b"RFB 003.008\n"
        await ws.send_bytes(b"RFB 003.008\n")
        count = (await receive(1))[0]
        if count:
            return "offered %s" % list(await receive(count)), None
        length = struct.unpack(">I", await receive(4))[0]
        reason = (await receive(length)).decode()
        msg = await ws.receive(timeout=30)
        return reason, (ws.close_code if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) else None)


def test_an_expired_or_made_up_token_is_refused(cloud):
    answer = endpoint(cloud)
    websocket = answer["websocket"]
    url = "ws://%s:%s%s?token=%s" % (websocket["host"], websocket["port"], websocket["path"], websocket["token"])
    time.sleep(TOKEN_TIMEOUT + 1)
    reason, code = run(_raw(url))
    assert "expired" in reason and code == 4001, (reason, code)
    reason, code = run(_raw(re.sub(r"token=.*", "token=made-up", url)))
    assert "not valid" in reason and code == 4001, (reason, code)
    # A fresh token gets the security type None offered: the proxy did the guest's VNC authentication.
    fresh = endpoint(cloud)["websocket"]
    offered, _unused = run(_raw(url.replace(websocket["token"], fresh["token"])))
    assert offered == "offered [1]", offered
