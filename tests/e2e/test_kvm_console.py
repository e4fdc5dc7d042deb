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
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest

from tests.support.browser import Chromium, chromium_binary, png_pixels, run
from tests.support.engine import EngineProcess
from tests.support.hierarchy import new_cluster, new_pod, new_zone, physical_network
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow]

BIN = Path(sys.executable).parent
NOVNC = Path("/usr/share/novnc/vnc.html")
TOKEN_TIMEOUT = 8
BRIDGE = "cloudbr0"

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


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log at %s)" % path
    return "\n".join([line for line in text.splitlines() if "[stackwright.management.access]" not in line][-lines:])


def virsh(uri, *args):
    run_ = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, timeout=30, check=False)
    assert run_.returncode == 0, "virsh %s: %s" % (" ".join(args), run_.stderr)
    return run_.stdout.strip()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, libvirtd, nfs_server):
    """An engine with one KVM host (the machine's libvirtd, address 127.0.0.1), an NFS pool, an
    Enabled zone, and one running guest with no OS."""
    if chromium_binary() is None or not NOVNC.exists():
        pytest.skip("needs Debian's chromium and novnc packages")
    workdir = tmp_path_factory.mktemp("kvm-console")
    engine = EngineProcess(workdir / "engine", "sqlite:///%s" % (workdir / "engine" / "cloud.db"))
    agent = None
    scratch = None
    vm = None
    api = None
    try:
        engine.start()
        api = engine.client()
        api.updateConfiguration(name="consoleproxy.token.timeout", value=str(TOKEN_TIMEOUT))
        unique = uuid.uuid4().hex[:8]
        zone = new_zone(api, unique, networktype="Advanced")
        network = physical_network(api, zone, unique, traffic=("Management", "Guest"), label=BRIDGE)
        api.addTrafficType(physicalnetworkid=network["id"], traffictype="Public", kvmnetworklabel=BRIDGE,
                           fetch_result=True)
        pod = new_pod(api, zone, unique)
        cluster = new_cluster(api, pod, unique, hypervisor="KVM")
        agent_dir = workdir / "agent"
        agent_dir.mkdir()
        token_file = agent_dir / "token"
        token_file.write_text(api.createAgentEnrollmentToken()["agentenrollmenttoken"]["token"])
        token_file.chmod(0o600)
        properties = agent_dir / "agent.properties"
        setup = subprocess.run(
            [str(BIN / "stackwright-setup-agent"), "--properties", str(properties), "--json",
             "--host", "127.0.0.1", "--port", str(engine.agent_port), "--zone", zone["name"], "--pod", pod["name"],
             "--cluster", cluster["name"], "--private-device", "lo", "--hypervisor-driver", "libvirt",
             "--libvirt-uri", libvirtd.uri, "--token-file", str(token_file)],
            capture_output=True, text=True, timeout=60, check=False)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        agent = subprocess.Popen([str(BIN / "stackwright-agent"), "--properties", str(properties),
                                  "--log-file", str(agent_dir / "agent.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        host = api.addHost(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"], hypervisor="KVM",
                           url="http://127.0.0.1", username="root", password="unused")["host"][0]

        def diagnostics():
            return "engine log:\n%s\nagent log:\n%s" % (tail(engine.log_file), tail(agent_dir / "agent.log"))

        wait_for("host Up", lambda: api.listHosts(id=host["id"])["host"][0]["state"] == "Up", 60)
        scratch = nfs_server.scratch(nfs_server.primary, "kvm-console-%s" % unique)
        pool = api.createStoragePool(zoneid=zone["id"], podid=pod["id"], clusterid=cluster["id"],
                                     name="primary-%s" % unique, url=scratch.url, scope="cluster")["storagepool"]
        wait_for("pool Up", lambda: api.listStoragePools(id=pool["id"])["storagepool"][0]["state"] == "Up", 60)
        api.updateZone(id=zone["id"], allocationstate="Enabled")
        [template] = [t for t in api.listTemplates(templatefilter="all")["template"]
                      if t["name"] == "Blank disk (no OS)"]
        offering = api.createServiceOffering(name="console-" + unique, displaytext="console", cpunumber=1,
                                             cpuspeed=500, memory=128)["serviceoffering"]
        existing = virsh(libvirtd.uri, "list", "--all", "--name").split()
        vm = api.deployVirtualMachine(zoneid=zone["id"], templateid=template["id"], serviceofferingid=offering["id"],
                                      fetch_result=True)["virtualmachine"]
        assert vm["state"] == "Running", "%s\n%s" % (vm, diagnostics())
        assert vm["instancename"] not in existing, "a guest %s was already defined on %s" % (
            vm["instancename"], libvirtd.uri)
        yield type("Cloud", (), dict(engine=engine, api=api, vm=vm, uri=libvirtd.uri, workdir=workdir,
                                     diagnostics=staticmethod(diagnostics)))
    finally:
        if vm is not None and api is not None:
            try:
                api.stopVirtualMachine(id=vm["id"], forced=True, fetch_result=True)
                api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
            except Exception as exc:  # the engine's state is reported, the clean-up goes on
                print("clean-up of %s failed: %s" % (vm["id"], exc))
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(20)
        engine.kill()
        if scratch is not None:
            nfs_server.discard(scratch)


def endpoint(cloud):
    answer = cloud.api.createConsoleEndpoint(virtualmachineid=cloud.vm["id"])["consoleendpoint"]
    assert answer["success"] is True, answer
    return answer


def test_the_guest_display_has_a_password_and_listens_on_the_management_address(cloud):
    domain = ET.fromstring(virsh(cloud.uri, "dumpxml", "--security-info", cloud.vm["instancename"]))
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
