"""Templates end to end with real processes: an engine, `stackwright-agent` with the libvirt driver
on qemu:///system, nfs-ganesha serving primary and secondary storage, and an HTTP server on
loopback serving the images.

The tests run in file order and share one engine, zone and host: register and download ->
a checksum failure -> an agent killed mid-download -> guests deployed from a bootable
template, booting to the marker on their serial console and sharing one copy of it on the
pool -> expunge and delete leaving nothing behind.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support import bootimage
from tests.support.kvm_cloud import kvm_site
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.libvirt, pytest.mark.nfs, pytest.mark.slow]

BOOT_TIMEOUT = 180


class ImageServer:
    """Serves files over HTTP on loopback; `rate` (bytes per second) slows the named files."""

    def __init__(self, files):
        self.files = dict(files)
        self.slow: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N802  # pylint: disable=no-self-argument
                name = handler.path.lstrip("/")
                path = server.files.get(name)
                if path is None:
                    handler.send_error(404, "Not Found")
                    return
                data = Path(path).read_bytes()
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                rate = server.slow.get(name)
                try:
                    if rate is None:
                        handler.wfile.write(data)
                        return
                    step = max(1, rate // 10)
                    for offset in range(0, len(data), step):
                        handler.wfile.write(data[offset:offset + step])
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(handler, *args):  # pylint: disable=no-self-argument
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.httpd.server_port, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def boot_image():
    try:
        return bootimage.bootable_qcow2()
    except bootimage.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def accel(boot_image):
    """kvm where KVM boots Linux here; else tcg (nested KVM that cannot run a Linux guest)."""
    return "kvm" if bootimage.kvm_boots(boot_image) else "tcg"


@pytest.fixture(scope="module")
def images(tmp_path_factory, boot_image):
    boot = boot_image
    scratch = tmp_path_factory.mktemp("images")
    small = scratch / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(small), "64M"], check=True)
    # 8 MiB of incompressible data for the download that is interrupted.
    slow = scratch / "slow.raw"
    slow.write_bytes(hashlib.sha256(b"seed").digest() * (8 << 15))
    server = ImageServer({"boot.qcow2": boot, "small.qcow2": small, "slow.raw": slow})
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, libvirtd, nfs_server, accel):
    """An engine that allows downloads from loopback, a KVM zone with one enrolled host Up, its
    NFS primary pool Up and its NFS image store checked."""
    with kvm_site(tmp_path_factory.mktemp("templates"), libvirtd, nfs_server, "templates") as site:
        site.api.updateConfiguration(name="secstorage.allowed.internal.sites", value="127.0.0.0/8")
        site.add_host("--set", "guest.accel=%s" % accel)
        site.add_storage(site.unique)
        site.enable()
        [site.os_type] = [o for o in site.api.listOsTypes()["ostype"] if o["description"] == "Other Linux (64-bit)"]
        site.account_id = None
        yield site


def register(site, url, name, **params):
    listed = site.api.registerTemplate(name=name, displaytext=name, url=url, format=params.pop("format", "QCOW2"),
                                       hypervisor="KVM", ostypeid=site.os_type["id"], zoneid=site.zone["id"],
                                       ispublic="true", **params)["template"]
    assert len(listed) == 1 and listed[0]["zoneid"] == site.zone["id"]
    return listed[0]


def template_now(site, template):
    return site.api.listTemplates(templatefilter="all", id=template["id"], zoneid=site.zone["id"])["template"][0]


def wait_status(site, template, done, timeout=120):
    seen = []

    def reached():
        now = template_now(site, template)
        if not seen or seen[-1] != now["status"]:
            seen.append(now["status"])
        return now if done(now) else None

    try:
        return wait_for("template %s %s" % (template["name"], done.__doc__ or ""), reached, timeout)
    except AssertionError as exc:
        raise AssertionError("%s\nstatuses: %s\n%s" % (exc, seen, site.diagnostics())) from None


def complete(now):
    """complete"""
    return now["isready"] or now["status"].startswith("Download failed")


def template_dir(site, template):
    """The template's directory on the secondary export: template/tmpl/<account id>/<id>."""
    found = list(site.secondary.path.glob("template/tmpl/*/*/%s.*" % template["id"]))
    return found[0].parent if found else None


# --- downloads -------------------------------------------------------------------------------


def test_a_template_is_downloaded_onto_the_nfs_image_store(site, images):
    data = Path(images.files["small.qcow2"]).read_bytes()
    template = register(site, images.url("small.qcow2"), "small-%s" % uuid.uuid4().hex[:6],
                        checksum="{SHA-256}" + hashlib.sha256(data).hexdigest())
    assert template["isready"] is False and template["status"].endswith("% Downloaded")
    now = wait_status(site, template, complete)
    assert (now["isready"], now["status"]) == (True, "Download Complete"), now
    assert now["size"] == 64 << 20 and now["physicalsize"] == len(data)
    directory = template_dir(site, template)
    assert directory is not None, list(site.secondary.path.rglob("*"))
    assert directory.parent.parent == site.secondary.path / "template" / "tmpl"
    assert (directory / ("%s.qcow2" % template["id"])).read_bytes() == data
    properties = (directory / "template.properties").read_text()
    assert "virtualsize=%d" % (64 << 20) in properties and "qcow2=true" in properties
    site.small = now


def test_a_checksum_mismatch_ends_with_the_reason_and_nothing_on_the_store(site, images):
    template = register(site, images.url("small.qcow2"), "bad-%s" % uuid.uuid4().hex[:6], checksum="0" * 32)
    now = wait_status(site, template, complete)
    assert now["isready"] is False
    assert now["status"].startswith("Download failed: checksum mismatch: expected %s" % ("0" * 32)), now
    assert template_dir(site, template) is None
    assert not list(site.secondary.path.glob("template/tmpl/*/*/template.properties")) or all(
        p.parent.name != template["id"] for p in site.secondary.path.glob("template/tmpl/*/*/template.properties"))


def test_an_agent_killed_mid_download_is_retried_and_never_ready_early(site, images):
    images.slow["slow.raw"] = 2 << 20           # 8 MiB at 2 MiB/s
    template = register(site, images.url("slow.raw"), "slow-%s" % uuid.uuid4().hex[:6], format="RAW")
    wait_for("the download under way", lambda: template_now(site, template)["status"] not in (
        "0% Downloaded",) and not template_now(site, template)["isready"], 60)
    site.agent.kill()
    assert template_now(site, template)["isready"] is False
    site.agent.start()
    site.wait_host("Up", 60)
    images.slow.pop("slow.raw")
    now = wait_status(site, template, complete, timeout=180)
    assert (now["isready"], now["status"]) == (True, "Download Complete"), now
    directory = template_dir(site, template)
    assert (directory / ("%s.raw" % template["id"])).read_bytes() == Path(images.files["slow.raw"]).read_bytes()


# --- guests from a bootable template --------------------------------------------------------


def console_log(name):
    path = Path("/var/log/libvirt/qemu/%s-console.log" % name)
    return path.read_text(errors="replace") if path.exists() else ""


def test_guests_boot_from_one_copy_of_the_template_on_their_pool(site, images):
    template = register(site, images.url("boot.qcow2"), "boot-%s" % uuid.uuid4().hex[:6])
    now = wait_status(site, template, complete)
    assert now["isready"], now
    offering = next(o for o in site.api.listServiceOfferings()["serviceoffering"] if o["name"] == "Small Instance")
    vms = []
    try:
        for _unused in range(2):
            vms.append(site.api.deployVirtualMachine(zoneid=site.zone["id"], templateid=template["id"],
                                                     serviceofferingid=offering["id"], rootdisksize=2,
                                                     fetch_result=True)["virtualmachine"])
        for vm in vms:
            assert vm["state"] == "Running", vm
            assert site.virsh("domstate", vm["instancename"]) == "running"
            try:
                wait_for("%s booted" % vm["instancename"],
                         lambda name=vm["instancename"]: bootimage.BOOT_MARKER in console_log(name), BOOT_TIMEOUT)
            except AssertionError as exc:
                raise AssertionError("%s\nconsole:\n%s" % (exc, console_log(vm["instancename"])[-2000:])) from None
        copies = list(site.primary.path.glob("template-%s" % template["id"]))
        assert len(copies) == 1, list(site.primary.path.iterdir())
        overlays = [p for p in site.primary.path.iterdir() if p != copies[0] and not p.name.startswith(".")]
        assert len(overlays) == 2, overlays
        for overlay in overlays:
            info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(overlay)],
                                             capture_output=True, text=True, check=True).stdout)
            assert info["backing-filename"] == copies[0].name
            assert info["virtual-size"] == 2 << 30
        hot_plug_a_volume(site, vms[0])
    finally:
        for vm in vms:
            site.api.destroyVirtualMachine(id=vm["id"], expunge=True, fetch_result=True)
    # The copy stays until the template is deleted, then nothing is left on either export.
    assert list(site.primary.path.glob("template-%s" % template["id"]))
    site.api.deleteTemplate(id=template["id"], fetch_result=True)
    assert list(site.primary.path.glob("template-*")) == []
    assert [p for p in site.primary.path.iterdir() if not p.name.startswith(".")] == []
    assert template_dir(site, template) is None
    assert site.api.listTemplates(templatefilter="all", id=template["id"]).get("template", []) == []


def disks_seen(name):
    """How many virtio disks the booted guest last reported on its serial console."""
    reports = [line.split(bootimage.DISKS_MARKER, 1)[1].split() for line in console_log(name).splitlines()
               if bootimage.DISKS_MARKER in line]
    return int(reports[-1][0]) if reports and reports[-1] else None


def hot_plug_a_volume(site, vm):
    """A data volume created on its own (Allocated, no image), attached to the running guest:
    made on the pool and hot-plugged, the guest sees a second virtio disk; grown live; detached:
    the guest loses it; grown on its pool; deleted: its image is gone."""
    api, name = site.api, vm["instancename"]
    offering = api.createDiskOffering(name="hot-%s" % uuid.uuid4().hex[:6], customized="true")["diskoffering"]
    volume = api.createVolume(name="hot-" + name, diskofferingid=offering["id"], size=1, zoneid=site.zone["id"],
                              fetch_result=True)["volume"]
    assert volume["state"] == "Allocated" and not list(site.primary.path.glob("%s*" % volume["id"]))
    wait_for("%s reports its disk" % name, lambda: disks_seen(name) == 1, 30)
    attached = api.attachVolume(id=volume["id"], virtualmachineid=vm["id"], fetch_result=True)["volume"]
    assert (attached["state"], attached["deviceid"], attached["virtualmachineid"]) == ("Ready", 1, vm["id"])
    assert site.virsh("domblklist", name).split()[3::2] == ["vda", "vdb"]
    try:
        wait_for("%s sees the hot-plugged disk" % name, lambda: disks_seen(name) == 2, 60)
    except AssertionError as exc:
        raise AssertionError("%s\nconsole:\n%s" % (exc, console_log(name)[-1000:])) from None
    grown = api.resizeVolume(id=volume["id"], size=2, fetch_result=True)["volume"]
    assert grown["size"] == 2 << 30
    capacity = [line.split()[1] for line in site.virsh("domblkinfo", name, "vdb").splitlines()
                if line.startswith("Capacity:")]
    assert capacity == [str(2 << 30)]
    detached = api.detachVolume(id=volume["id"], fetch_result=True)["volume"]
    assert "virtualmachineid" not in detached
    assert site.virsh("domblklist", name).split()[3::2] == ["vda"]
    wait_for("%s lost the unplugged disk" % name, lambda: disks_seen(name) == 1, 60)
    [image] = list(site.primary.path.glob("%s*" % volume["id"]))
    # Detached, it grows on its pool (qemu-img resize).
    assert api.resizeVolume(id=volume["id"], size=3, fetch_result=True)["volume"]["size"] == 3 << 30
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(image)], capture_output=True,
                                     text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 3 << 30)
    api.deleteVolume(id=volume["id"], fetch_result=True)
    assert not image.exists()
    api.deleteDiskOffering(id=offering["id"])


def test_deleting_a_template_removes_it_from_the_image_store(site):
    template = site.small
    assert template_dir(site, template) is not None
    site.api.deleteTemplate(id=template["id"], fetch_result=True)
    assert template_dir(site, template) is None


# --- the cs_template and cs_template_info modules ------------------------------------------------


def module(site, tmp_path, module_name, check=False, **args):
    """Run a module of the collection with `ansible localhost -m`; its result."""
    from tests.support.ansible import ansible_env, collection_tree

    tree = tmp_path / "collections"
    if not tree.exists():
        collection_tree(tree)
    command = [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-o",
               "-m", "stackwright.cloudstack.%s" % module_name, "-a", json.dumps(args)]
    command += ["--check"] if check else []
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                         env=ansible_env(tree, tmp_path, engine=site.engine))
    out = run.stdout.strip()
    assert " => " in out, "%s\n%s" % (out, run.stderr)
    status, _unused, payload = out.partition(" => ")
    result = json.loads(payload)
    result["_status"] = status.split(" | ")[-1]
    return result


def test_cs_template_registers_waits_and_is_idempotent(site, images, tmp_path):
    name = "mod-%s" % uuid.uuid4().hex[:6]
    data = Path(images.files["small.qcow2"]).read_bytes()
    args = dict(name=name, zone=site.zone["name"], url=images.url("small.qcow2"), os_type="Other Linux (64-bit)",
                checksum="{SHA-256}" + hashlib.sha256(data).hexdigest(), is_public=True, wait_timeout=120)
    checked = module(site, tmp_path, "cs_template", check=True, **args)
    assert checked["changed"] is True and checked["template"]["status"] == "0% Downloaded", checked
    assert site.api.listTemplates(templatefilter="all", name=name).get("template", []) == []

    created = module(site, tmp_path, "cs_template", **args)
    assert created["changed"] is True, created
    assert (created["template"]["is_ready"], created["template"]["status"]) == (True, "Download Complete")
    assert created["template"]["zone"] == site.zone["name"]
    again = module(site, tmp_path, "cs_template", **args)
    assert again["changed"] is False and again["template"]["id"] == created["template"]["id"], again

    changed = module(site, tmp_path, "cs_template", **dict(args, display_text="renamed"))
    assert changed["changed"] is True and changed["template"]["display_text"] == "renamed", changed
    assert template_now(site, created["template"])["displaytext"] == "renamed"

    listed = module(site, tmp_path, "cs_template_info", name=name, zone=site.zone["name"])
    assert [t["id"] for t in listed["templates"]] == [created["template"]["id"]]

    gone = module(site, tmp_path, "cs_template", name=name, zone=site.zone["name"], state="absent")
    assert gone["changed"] is True
    assert module(site, tmp_path, "cs_template", name=name, zone=site.zone["name"], state="absent")["changed"] is False
    assert template_dir(site, created["template"]) is None


def test_cs_template_fails_with_the_download_reason(site, images, tmp_path):
    name = "modbad-%s" % uuid.uuid4().hex[:6]
    failed = module(site, tmp_path, "cs_template", name=name, zone=site.zone["name"], url=images.url("missing"),
                    os_type="Other Linux (64-bit)", wait_timeout=120)
    assert failed["_status"] == "FAILED!", failed
    assert "Download failed: HTTP error 404" in failed["msg"], failed
