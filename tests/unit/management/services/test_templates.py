"""Templates registered from a URL and downloaded by a host's agent onto the zone's image store,
and root volumes made as overlays on their copies on primary pools.

The downloads are real: the agent's download code fetches from an HTTP server on loopback;
the image store and pools are the agent's simulator storage (it keeps a template's first
bytes, so the format is told from the qcow2 header the way qemu-img tells it). Jobs run
through the real executor (job_harness).
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading

import pytest
from sqlalchemy import select

from stackwright import properties as props
from stackwright.management.errors import InvalidParameterValue, ResourceUnavailable
from stackwright.management.persistence.models import (
    GuestOs,
    ImageStore,
    Template,
    TemplatePoolRef,
    TemplateStoreRef,
    Volume,
)
from stackwright.management.services import catalog, template_jobs
from stackwright.management.services.placement import GiB
from stackwright.protocol import messages as m
from tests.support.gateway import EngineKilled
from tests.unit.management.services.job_harness import failure
from tests.unit.management.services.test_vm_lifecycle import fresh, root
from tests.unit.management.services.test_vms import World

VIRTUAL = 64 << 20


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A real qcow2 (64 MiB virtual) and a raw file."""
    directory = tmp_path_factory.mktemp("images")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "disk.qcow2"), str(VIRTUAL)],
                   check=True)
    (directory / "disk.raw").write_bytes(b"\0" * (1 << 20))
    return directory


class Server:
    """An HTTP server on loopback serving `images`; /missing answers 404, /huge claims 2 GiB."""

    def __init__(self, directory):
        files = {p.name: p.read_bytes() for p in directory.iterdir()}
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N802  # pylint: disable=no-self-argument
                self.requests.append(handler.path)
                name = handler.path.lstrip("/")
                if name == "huge":
                    handler.send_response(200)
                    handler.send_header("Content-Length", str(2 * GiB))
                    handler.end_headers()
                    handler.wfile.write(b"x" * 10)
                    return
                if name not in files:
                    handler.send_error(404, "Not Found")
                    return
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(files[name])))
                handler.end_headers()
                handler.wfile.write(files[name])

            def log_message(handler, *args):  # pylint: disable=no-self-argument
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.files = files

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.httpd.server_port, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(images):
    serving = Server(images)
    yield serving
    serving.close()


@pytest.fixture
def ctx(job_ctx, monkeypatch):
    monkeypatch.setattr(template_jobs, "POLL_SECONDS", 0.02)
    monkeypatch.setattr(template_jobs, "RETRY_SECONDS", 0.02)
    catalog.seed(job_ctx.session)
    job_ctx.settings.set_global("secstorage.allowed.internal.sites", "127.0.0.0/8")
    job_ctx.session.commit()
    job_ctx.engine.settings.invalidate()
    return job_ctx


class Site(World):
    """A KVM zone with an Up host whose agent runs in process, a primary pool and an image store."""

    def __init__(self, ctx, gateway):
        super().__init__(ctx)
        self.cluster = self.new_cluster(hypervisor="KVM")
        self.kvm = self.host()
        self.driver, self.storage = gateway.add(self.kvm.guid)
        self.primary = self.pool()
        self.store = self.add(ImageStore(name=self.name("store"), zone_id=self.zone.id, url="nfs://nfs/secondary",
                                         protocol="nfs", provider="NFS", state="Up"))
        self.os_type = ctx.session.execute(select(GuestOs).where(
            GuestOs.display_name == "Debian GNU/Linux 12 (64-bit)")).scalar_one()
        ctx.session.commit()


@pytest.fixture
def site(ctx, gateway):
    return Site(ctx, gateway)


def register(ctx, site, url, fmt="QCOW2", checksum=None, zone=True):
    template = ctx.templates.register(
        name="debian", display_text="Debian", url=url, fmt=fmt, hypervisor="KVM", os_type=site.os_type,
        zone=site.zone if zone else None, owner=site.account, is_public=True, checksum=checksum)
    ctx.session.commit()
    ctx.run_after_commit()
    return template


def download(ctx, jobs, template):
    """Run the template's download jobs; the copy's row afterwards."""
    for job_uuid in list(jobs.submitted):
        jobs.run(job_uuid)
    jobs.submitted.clear()
    return copy_of(ctx, template)


def copy_of(ctx, template):
    ctx.session.commit()
    row = ctx.session.execute(select(TemplateStoreRef).where(TemplateStoreRef.template_id == template.id)
                              .execution_options(populate_existing=True)).scalar_one()
    ctx.session.commit()
    return row


def template_row(ctx, template):
    ctx.session.commit()
    row = ctx.session.get(Template, template.id, populate_existing=True)
    ctx.session.commit()
    return row


def stored(site, template):
    """What the image store holds in the template's directory."""
    return site.storage.templates().get(("nfs://nfs/secondary", "template/tmpl/%d/%d" % (site.account.id, template.id)))


# --- downloads -------------------------------------------------------------------------------


def test_a_registered_template_is_downloaded_onto_the_image_store(ctx, site, jobs, server, images):
    data = server.files["disk.qcow2"]
    template = register(ctx, site, server.url("disk.qcow2"), checksum="{SHA-256}" + hashlib.sha256(data).hexdigest())
    before = copy_of(ctx, template)
    assert (before.state, before.status) == ("Allocated", "0% Downloaded")
    ref = download(ctx, jobs, template)
    assert (ref.state, ref.status, ref.percent) == ("Ready", "Download Complete", 100)
    assert (ref.physical_size, ref.virtual_size) == (len(data), VIRTUAL)
    row = template_row(ctx, template)
    assert (row.is_ready, row.status, row.size_bytes) == (True, "Download Complete", VIRTUAL)
    files = stored(site, template)
    assert files["%s.qcow2" % template.uuid] == len(data)
    written = props.parse(files["template.properties"].decode())
    assert written["filename"] == "%s.qcow2" % template.uuid
    assert (written["size"], written["virtualsize"], written["qcow2"]) == (str(len(data)), str(VIRTUAL), "true")
    assert written["id"] == str(template.id)
    # One start, then progress queries until complete.
    assert jobs.gateway.calls(m.DownloadTemplate) == [(site.kvm.guid, m.DownloadTemplate)]


def test_a_checksum_mismatch_fails_and_leaves_nothing(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"), checksum="0" * 32)
    ref = download(ctx, jobs, template)
    assert ref.state == "Failed"
    assert ref.status.startswith("Download failed: checksum mismatch: expected " + "0" * 32)
    assert stored(site, template) is None
    assert template_row(ctx, template).is_ready is False


@pytest.mark.parametrize("name, fmt, reason", [
    ("missing", "QCOW2", "Download failed: HTTP error 404 Not Found from http://127.0.0.1:"),
    ("disk.qcow2", "RAW", "Download failed: the file is qcow2, not RAW as registered (qemu-img info)"),
    ("disk.raw", "QCOW2", "Download failed: the file is raw, not QCOW2 as registered (qemu-img info)"),
    ("huge", "QCOW2", "Download failed: the file is 2147483648 bytes, larger than max.template.iso.size"),
])
def test_failed_downloads_name_the_reason(ctx, site, jobs, server, name, fmt, reason):
    ctx.settings.set_global("max.template.iso.size", "1")
    ctx.session.commit()
    ctx.engine.settings.invalidate()
    try:
        template = register(ctx, site, server.url(name), fmt=fmt)
        ref = download(ctx, jobs, template)
    finally:
        ctx.settings.set_global("max.template.iso.size", "50")
        ctx.session.commit()
        ctx.engine.settings.invalidate()
    assert ref.state == "Failed"
    assert ref.status.startswith(reason), ref.status
    assert stored(site, template) is None


def test_an_engine_killed_mid_download_goes_on_without_a_second_download(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"))
    job_uuid = jobs.submitted[0]
    jobs.gateway.kill_after = {m.DownloadTemplate}
    with pytest.raises(EngineKilled):
        jobs.run(job_uuid)
    jobs.gateway.kill_after = set()
    assert copy_of(ctx, template).state == "Downloading"
    assert template_row(ctx, template).is_ready is False
    ref = download(ctx, jobs, template)
    assert ref.state == "Ready"
    # The unrecorded DownloadTemplate is asked again: the agent answers for the one under way.
    assert len(jobs.gateway.calls(m.DownloadTemplate)) == 2
    assert server.requests.count("/disk.qcow2") >= 1


def test_an_agent_that_lost_the_download_is_asked_again(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"))
    # The agent restarts before the job asks it: it knows nothing of the download.
    original = jobs.gateway.hosts[site.kvm.guid]
    jobs.gateway.kill_after = {m.DownloadTemplate}
    with pytest.raises(EngineKilled):
        jobs.run(jobs.submitted[0])
    jobs.gateway.kill_after = set()
    original.context.downloads._downloads.clear()
    site.storage.delete_template(m.TemplateLocation(store_url="nfs://nfs/secondary",
                                                    directory="template/tmpl/%d/%d" % (site.account.id, template.id),
                                                    file_name="x"))
    ref = download(ctx, jobs, template)
    assert ref.state == "Ready"
    assert stored(site, template)["template.properties"]


def test_internal_and_non_http_urls_are_refused(ctx, site):
    ctx.settings.set_global("secstorage.allowed.internal.sites", "")
    ctx.session.commit()
    ctx.engine.settings.invalidate()
    try:
        for url, reason in (
                ("http://127.0.0.1/x.qcow2", "127.0.0.1, a loopback address"),
                ("http://169.254.169.254/x.qcow2", "a link-local address"),
                ("http://10.0.0.5/x.qcow2", "in the management network 10.0.0.0/24 of pod"),
                ("ftp://192.0.2.1/x.qcow2", "only http and https URLs can be downloaded")):
            with pytest.raises(InvalidParameterValue) as refused:
                register(ctx, site, url)
            assert reason in refused.value.text, refused.value.text
            ctx.session.rollback()
    finally:
        ctx.settings.set_global("secstorage.allowed.internal.sites", "127.0.0.0/8")
        ctx.session.commit()
        ctx.engine.settings.invalidate()


def test_a_zone_of_simulator_hosts_ends_the_download_with_the_reason(ctx, jobs, server):
    world = World(ctx)
    world.host()
    world.add(ImageStore(name=world.name("store"), zone_id=world.zone.id, url="nfs://nfs/simulated",
                         protocol="nfs", provider="NFS", state="Up"))
    world.os_type = ctx.session.execute(select(GuestOs).where(
        GuestOs.display_name == "Debian GNU/Linux 12 (64-bit)")).scalar_one()
    ctx.session.commit()
    template = register(ctx, world, server.url("disk.qcow2"))
    ref = download(ctx, jobs, template)
    assert ref.state == "Failed"
    assert ref.status == (
        "Download failed: zone %s has only Simulator hosts; their agents are simulated in the engine and write no "
        "image store, and templates are downloaded by the agent of a KVM host of the zone: add one and register "
        "the template again" % world.zone.name), ref.status
    assert template_row(ctx, template).is_ready is False
    assert jobs.gateway.calls(m.DownloadTemplate) == []


def test_the_url_is_judged_again_where_and_when_the_download_starts(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"))
    # Between registration and download, what the URL leads to stops being allowed (as after a
    # DNS change to an internal address): the agent resolves the name again and refuses it.
    ctx.settings.set_global("secstorage.allowed.internal.sites", "")
    ctx.session.commit()
    ctx.engine.settings.invalidate()
    asked = len(server.requests)
    try:
        ref = download(ctx, jobs, template)
    finally:
        ctx.settings.set_global("secstorage.allowed.internal.sites", "127.0.0.0/8")
        ctx.session.commit()
        ctx.engine.settings.invalidate()
    assert ref.state == "Failed"
    assert ref.status.startswith("Download failed: refused when the download started: 127.0.0.1 resolves to "
                                 "127.0.0.1, a loopback address; downloads from there are refused unless "
                                 "secstorage.allowed.internal.sites allows it"), ref.status
    assert len(server.requests) == asked
    assert stored(site, template) is None


def test_bad_checksums_and_formats_are_refused(ctx, site, server):
    for kwargs, text in ((dict(checksum="{SHA-256}abc"), "Invalid checksum {SHA-256}abc"),
                         (dict(checksum="{CRC}00"), "Invalid checksum"),
                         (dict(fmt="VHD"), "Invalid format VHD")):
        with pytest.raises(InvalidParameterValue) as refused:
            register(ctx, site, server.url("disk.qcow2"), **kwargs)
        assert text in refused.value.text
        ctx.session.rollback()


def test_an_unreachable_image_store_refuses_registration_and_is_checked_again(ctx, site, server):
    store = ctx.session.get(ImageStore, site.store.id)
    store.state, store.status_message = "Unreachable", "NFS export nfs:/secondary is unreachable: timed out"
    ctx.session.commit()
    with pytest.raises(ResourceUnavailable) as refused:
        register(ctx, site, server.url("disk.qcow2"))
    assert ("the image store %s (nfs://nfs/secondary) of zone %s is unreachable: NFS export" %
            (store.name, site.zone.name)) in refused.value.text
    # The store is checked again at once, so registering works again once it is back.
    assert ("check_image_store", store.uuid) in ctx.engine.gateway.background


# --- root volumes from templates -------------------------------------------------------------


def new_vm(ctx, site, template):
    vm = site.vm(None, state="Stopped", memory=512)
    vm.template_id, vm.hypervisor = template.id, "KVM"
    ctx.session.add(Volume(name="ROOT-%d" % vm.id, vm_id=vm.id, zone_id=site.zone.id, account_id=site.account.id,
                           size_bytes=max(GiB, template.size_bytes), format="qcow2", state="Allocated"))
    ctx.session.commit()
    return vm


def test_guests_share_one_copy_of_the_template_on_their_pool_until_it_is_unused(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"))
    download(ctx, jobs, template)
    template = template_row(ctx, template)
    first, second = new_vm(ctx, site, template), new_vm(ctx, site, template)
    for vm in (first, second):
        job = jobs.call(ctx.user, "startVirtualMachine", id=vm.uuid)
        assert job.status == 1, job.result
    copies = site.storage.volumes(site.primary.uuid)
    name = "template-%s" % template.uuid
    assert copies[name] == len(server.files["disk.qcow2"])
    assert [c for c in jobs.gateway.calls() if c[1] is m.CopyTemplate] == [(site.kvm.guid, m.CopyTemplate)]
    volume = root(ctx, first)
    assert (volume.template_id, volume.format) == (template.id, "qcow2")
    assert volume.disk["backing"]["source"]["path"] == name
    ref = ctx.session.execute(select(TemplatePoolRef)).scalars().all()
    assert [(r.template_id, r.pool_id, r.state) for r in ref] == [(template.id, site.primary.id, "Ready")]
    ctx.session.commit()

    assert jobs.call(ctx.user, "destroyVirtualMachine", id=first.uuid, expunge="true").status == 1
    assert name in site.storage.volumes(site.primary.uuid)          # the second guest still uses it
    job = jobs.call(ctx.user, "deleteTemplate", id=template.uuid)
    assert job.status == 1, job.result
    assert stored(site, template) is None
    assert name in site.storage.volumes(site.primary.uuid)          # in use: deleting the template keeps it
    assert jobs.call(ctx.user, "destroyVirtualMachine", id=second.uuid, expunge="true").status == 1
    assert name not in site.storage.volumes(site.primary.uuid)
    assert ctx.session.execute(select(TemplatePoolRef)).scalars().all() == []
    ctx.session.commit()
    assert fresh(ctx, second).removed is not None


def test_rootdisksize_grows_the_overlay_and_a_template_not_downloaded_cannot_start(ctx, site, jobs, server):
    template = register(ctx, site, server.url("disk.qcow2"))
    vm = new_vm(ctx, site, template_row(ctx, template))
    code, text = failure(jobs.call(ctx.user, "startVirtualMachine", id=vm.uuid))
    assert "has not been downloaded to zone" in text
    download(ctx, jobs, template)
    volume = ctx.session.execute(select(Volume).where(Volume.vm_id == vm.id)).scalar_one()
    volume.size_bytes = 5 * GiB
    ctx.session.commit()
    assert jobs.call(ctx.user, "startVirtualMachine", id=vm.uuid).status == 1
    assert root(ctx, vm).disk["size_bytes"] == 5 * GiB


def test_the_os_catalogue(ctx):
    added = catalog.seed(ctx.session)
    assert added == []                       # seeding twice adds nothing
    names = set(ctx.session.execute(select(GuestOs.display_name)).scalars())
    assert {"Debian GNU/Linux 12 (64-bit)", "Ubuntu 22.04 LTS", "Windows Server 2022 (64-bit)",
            "Other (64-bit)"} <= names
    builtin = ctx.session.execute(select(Template).where(Template.unique_name == "stackwright-blank-kvm")
                                  ).scalar_one_or_none()
    if builtin is not None:
        assert builtin.os_type_id is not None


def test_an_iso_must_carry_the_iso_9660_signature(ctx, site, jobs, server):
    iso = register(ctx, site, server.url("disk.raw"), fmt="ISO")
    ref = download(ctx, jobs, iso)
    assert (ref.state, ref.status) == ("Failed", "Download failed: the file is not an ISO 9660 image (no CD001 "
                                                 "signature)")
    assert ref.install_path.endswith("/%s.iso" % iso.uuid)
    assert stored(site, iso) is None
    # ISOs are listed by listIsos, templates by listTemplates.
    shown = ctx.catalog.templates("all", iso=True)
    assert iso.id in set(ctx.session.execute(shown.with_only_columns(Template.id)).scalars())
    assert iso.id not in set(ctx.session.execute(
        ctx.catalog.templates("all").with_only_columns(Template.id)).scalars())


def test_the_next_query_comes_when_the_download_should_end():
    status = m.DownloadStatus(state="downloading", downloaded_bytes=10 << 20, total_bytes=100 << 20)
    seen, first = template_jobs.next_query(status, None, 100.0)
    assert (seen, first) == ((10 << 20, 100.0), template_jobs.MIN_POLL_SECONDS)
    # 40 MiB in 0.5 s: the other 50 MiB take 0.625 s more.
    later = m.DownloadStatus(state="downloading", downloaded_bytes=50 << 20, total_bytes=100 << 20)
    seen, interval = template_jobs.next_query(later, seen, 100.5)
    assert seen == (50 << 20, 100.5) and abs(interval - 0.625) < 1e-9
    # Slow: never more than POLL_SECONDS; all bytes in (qemu-img info still to run): MIN_POLL_SECONDS.
    crawling = m.DownloadStatus(state="downloading", downloaded_bytes=(50 << 20) + 1, total_bytes=100 << 20)
    assert template_jobs.next_query(crawling, seen, 101.5)[1] == template_jobs.POLL_SECONDS
    done = m.DownloadStatus(state="downloading", downloaded_bytes=100 << 20, total_bytes=100 << 20)
    assert template_jobs.next_query(done, seen, 101.0)[1] == template_jobs.MIN_POLL_SECONDS
    # No progress: the longest wait; no length from the server: twice the last wait, up to the longest.
    assert template_jobs.next_query(later, seen, 101.0)[1] == template_jobs.POLL_SECONDS
    unknown = m.DownloadStatus(state="downloading", downloaded_bytes=60 << 20, total_bytes=0)
    assert abs(template_jobs.next_query(unknown, seen, 100.8)[1] - 0.6) < 1e-9
    assert template_jobs.next_query(unknown, seen, 103.0)[1] == template_jobs.POLL_SECONDS
