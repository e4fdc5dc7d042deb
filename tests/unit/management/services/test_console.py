"""Guest consoles: one-time tokens, the VNC authentication of the proxy (against a scripted RFB
peer and, when QEMU is installed, a real QEMU VNC server), the handshake the browser sees, the
VNC password a start hands the agent, and createConsoleEndpoint."""

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from stackwright.management.commands.console import create_console_endpoint, url_host
from stackwright.management.errors import PermissionDenied
from stackwright.management.persistence import crypto
from stackwright.management.context import Context
from stackwright.management.persistence.models import Account, AsyncJob, User
from stackwright.management.services import console
from stackwright.management.services.console import ConsoleTokens, TokenRefused, VncError
from tests.unit.management.services.test_vm_lifecycle import fresh, new_vm, start
from tests.unit.management.services.test_vms import World


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# --- tokens -------------------------------------------------------------------------------


def test_a_token_opens_its_vm_once():
    tokens = ConsoleTokens()
    grant = tokens.issue(7, "uuid-7", timeout=60)
    assert len(grant.token) >= 40
    assert tokens.redeem(grant.token).vm_id == 7
    with pytest.raises(TokenRefused, match="already used"):
        tokens.redeem(grant.token)


def test_tokens_are_distinct_and_each_names_its_own_vm():
    tokens = ConsoleTokens()
    first, second = tokens.issue(1, "a", 60), tokens.issue(2, "b", 60)
    assert first.token != second.token
    assert (tokens.redeem(second.token).vm_uuid, tokens.redeem(first.token).vm_uuid) == ("b", "a")


def test_a_token_unused_past_its_timeout_is_refused_as_expired():
    clock = Clock()
    tokens = ConsoleTokens(clock)
    grant = tokens.issue(1, "a", timeout=30)
    clock.now += 31
    with pytest.raises(TokenRefused, match="expired"):
        tokens.redeem(grant.token)
    with pytest.raises(TokenRefused, match="expired"):
        tokens.redeem(grant.token)


def test_a_token_used_just_before_its_timeout_works():
    clock = Clock()
    tokens = ConsoleTokens(clock)
    grant = tokens.issue(1, "a", timeout=30)
    clock.now += 29.9
    assert tokens.redeem(grant.token).vm_id == 1


def test_unknown_tokens_are_refused_and_old_ones_forgotten():
    clock = Clock()
    tokens = ConsoleTokens(clock)
    with pytest.raises(TokenRefused, match="not valid"):
        tokens.redeem("made-up")
    grant = tokens.issue(1, "a", timeout=30)
    tokens.redeem(grant.token)
    clock.now += ConsoleTokens.REMEMBER + 1
    tokens.issue(2, "b", timeout=30)            # sweeps what is long gone
    with pytest.raises(TokenRefused, match="not valid"):
        tokens.redeem(grant.token)


# --- VNC authentication -----------------------------------------------------------------------


def test_vnc_response_matches_what_qemu_accepted():
    # A challenge a QEMU 7.2 VNC server sent and the answer it accepted for password Pa55word.
    challenge = bytes.fromhex("e2b9264d699735acd556acc3bf3cb500")
    assert console.vnc_response("Pa55word", challenge).hex() == "7961465e582bfec03e0dcdccc6beeac1"
    assert console.vnc_response("Pa55wore", challenge) != console.vnc_response("Pa55word", challenge)
    # Only the first 8 characters count, as in every VNC server.
    assert console.vnc_response("Pa55word-and-more", challenge) == console.vnc_response("Pa55word", challenge)


def test_new_vnc_passwords_are_random_and_eight_characters():
    passwords = {console.new_vnc_password() for _unused in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 8 and p.isalnum() for p in passwords)


class Pipe:
    """One side of a scripted RFB conversation: what the code under test sends is collected,
    what it receives comes from a script."""

    def __init__(self, *incoming: bytes):
        self.incoming = bytearray(b"".join(incoming))
        self.sent = bytearray()

    async def receive(self, count):
        if len(self.incoming) < count:
            raise asyncio.IncompleteReadError(bytes(self.incoming), count)
        data, self.incoming = bytes(self.incoming[:count]), self.incoming[count:]
        return data

    async def send(self, data):
        self.sent += data


def run(coro):
    return asyncio.run(coro)


def test_to_server_answers_the_challenge_with_the_password():
    challenge = bytes(range(16))
    server = Pipe(b"RFB 003.008\n", bytes([2, 1, 2]), challenge, struct.pack(">I", 0))
    run(console.to_server(server.receive, server.send, "secret12"))
    assert bytes(server.sent) == b"RFB 003.008\n" + bytes([2]) + console.vnc_response("secret12", challenge)
    assert not server.incoming


def test_to_server_reports_the_servers_reasons():
    refused = Pipe(b"RFB 003.008\n", b"\0", struct.pack(">I", 9), b"too many!")
    with pytest.raises(VncError, match="too many!"):
        run(console.to_server(refused.receive, refused.send, "pw"))
    wrong = Pipe(b"RFB 003.008\n", bytes([1, 2]), bytes(16), struct.pack(">I", 1), struct.pack(">I", 6), b"denied")
    with pytest.raises(VncError, match="authentication failed: denied"):
        run(console.to_server(wrong.receive, wrong.send, "pw"))
    no_password = Pipe(b"RFB 003.008\n", bytes([1, 2]))
    with pytest.raises(VncError, match="asks for a password"):
        run(console.to_server(no_password.receive, no_password.send, None))
    garbage = Pipe(b"HTTP/1.1 400")
    with pytest.raises(VncError, match="not an RFB protocol version"):
        run(console.to_server(garbage.receive, garbage.send, "pw"))


def test_to_server_speaks_older_servers_versions():
    v33 = Pipe(b"RFB 003.003\n", struct.pack(">I", 2), bytes(16), struct.pack(">I", 0))
    run(console.to_server(v33.receive, v33.send, "pw"))
    assert bytes(v33.sent[:12]) == b"RFB 003.003\n"
    # 3.7 with None: no SecurityResult follows.
    v37 = Pipe(b"RFB 003.007\n", bytes([1, 1]))
    run(console.to_server(v37.receive, v37.send, None))
    assert bytes(v37.sent) == b"RFB 003.007\n" + bytes([1])


def test_to_browser_offers_none_and_reports_success():
    browser = Pipe(b"RFB 003.008\n", bytes([1]))
    run(console.to_browser(browser.receive, browser.send))
    assert bytes(browser.sent) == b"RFB 003.008\n" + bytes([1, 1]) + struct.pack(">I", 0)


def test_to_browser_refusal_carries_the_reason():
    browser = Pipe(b"RFB 003.008\n")
    run(console.to_browser(browser.receive, browser.send, refusal="this console URL was already used"))
    reason = b"this console URL was already used"
    assert bytes(browser.sent) == b"RFB 003.008\n" + b"\0" + struct.pack(">I", len(reason)) + reason


def test_to_browser_refuses_a_browser_choosing_vnc_auth():
    browser = Pipe(b"RFB 003.008\n", bytes([2]))
    with pytest.raises(VncError, match="only None"):
        run(console.to_browser(browser.receive, browser.send))


def _free_display():
    for display in range(60, 100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 5900 + display)) != 0:
                return display
    pytest.skip("no free VNC display")


@pytest.fixture
def qemu_vnc(tmp_path):
    """A real QEMU (no guest OS, TCG) whose VNC display asks for password Pa55word."""
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    display = _free_display()
    proc = subprocess.Popen([binary, "-display", "none", "-machine", "accel=tcg", "-m", "32", "-nodefaults",
                             "-vga", "std", "-object", "secret,id=vs,data=Pa55word",
                             "-vnc", "127.0.0.1:%d,password-secret=vs" % display],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp_path, "qemu.log"), "wb"))
    port = 5900 + display
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("QEMU did not open its VNC display: %s" % (tmp_path / "qemu.log").read_text())
        time.sleep(0.1)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def _session(port, password):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send(data):
        writer.write(data)
        await writer.drain()

    try:
        await console.to_server(reader.readexactly, send, password)
        await send(b"\1")                                  # ClientInit, shared
        head = await reader.readexactly(24)
        width, height = struct.unpack(">HH", head[:4])
        name = await reader.readexactly(struct.unpack(">I", head[20:])[0])
        return width, height, name
    finally:
        writer.close()


def test_the_proxy_authenticates_with_a_real_qemu(qemu_vnc):
    width, height, name = asyncio.run(_session(qemu_vnc, "Pa55word"))
    assert width > 0 and height > 0 and name == b"QEMU"
    with pytest.raises(VncError, match="authentication failed"):
        asyncio.run(_session(qemu_vnc, "Wrong123"))


# --- the password a start hands the agent; createConsoleEndpoint -------------------------------


@pytest.fixture
def ctx(job_ctx):
    return job_ctx


def test_a_start_gives_the_guest_a_password_kept_encrypted_and_out_of_the_job_record(ctx, gateway, jobs):
    world = World(ctx)
    host = world.host()
    world.pool()
    driver, _storage = gateway.add(host.guid)
    vm = new_vm(ctx, world)
    job = start(ctx, jobs, vm)
    assert job.status == 1
    vm = fresh(ctx, vm)
    password = vm.vnc_password
    assert password and len(password) == 8
    stored = ctx.session.execute(text("SELECT vnc_password FROM vm_instance WHERE id = :id"), {"id": vm.id}).scalar()
    ctx.session.commit()
    assert crypto.is_encrypted(stored) and password not in stored
    # The agent got it in clear; the job's recorded steps never held it.
    assert driver._require(vm.instance_name).spec.vnc_password == password
    row = ctx.session.get(AsyncJob, job.id)
    assert password not in repr(row.step_results) and password not in repr(row.result)
    ctx.session.commit()
    # The next start keeps the password.
    jobs.call(ctx.user, "stopVirtualMachine", id=vm.uuid)
    start(ctx, jobs, vm)
    assert fresh(ctx, vm).vnc_password == password


def test_create_console_endpoint_for_a_running_kvm_guest(ctx, jobs):
    world = World(ctx)
    host = world.host()
    vm = world.vm(host, state="Running")
    vm.hypervisor = "KVM"
    ctx.session.commit()
    engine = jobs.engine
    engine.consoles, engine.console_endpoint = ConsoleTokens(), ("https", "192.0.2.10", 8443)
    answer = create_console_endpoint(ctx, SimpleNamespace(virtualmachineid=vm, token="extra"))
    token = answer["websocket"]["token"]
    assert answer["success"] is True
    assert answer["url"].startswith("https://192.0.2.10:8443/console/vnc.html?")
    assert "encrypt=1" in answer["url"] and token in answer["url"]
    assert answer["websocket"] == {"token": token, "host": "192.0.2.10", "port": "8443",
                                   "path": "/console/websockify", "extra": "extra"}
    assert engine.consoles.redeem(token).vm_id == vm.id


def test_create_console_endpoint_refusals(ctx, jobs):
    world = World(ctx)
    host = world.host()
    engine = jobs.engine
    engine.consoles, engine.console_endpoint = ConsoleTokens(), ("http", "127.0.0.1", 8080)
    simulated = world.vm(host, state="Running")
    answer = create_console_endpoint(ctx, SimpleNamespace(virtualmachineid=simulated, token=None))
    assert answer["success"] is False and "no console" in answer["details"]
    stopped = world.vm(None, state="Stopped")
    stopped.hypervisor = "KVM"
    ctx.session.commit()
    answer = create_console_endpoint(ctx, SimpleNamespace(virtualmachineid=stopped, token=None))
    assert answer["success"] is False and "Stopped" in answer["details"]
    engine.console_endpoint = None
    running = world.vm(host, state="Running")
    running.hypervisor = "KVM"
    ctx.session.commit()
    answer = create_console_endpoint(ctx, SimpleNamespace(virtualmachineid=running, token=None))
    assert answer["success"] is False and "not running" in answer["details"]


def test_console_urls_follow_the_url_domain():
    assert url_host(None, "10.1.2.3") == "10.1.2.3"
    assert url_host(None, "fd00::5") == "[fd00::5]"
    assert url_host("console.example.com", "10.1.2.3") == "console.example.com"
    assert url_host("*.realhostip.com", "10.1.2.3") == "10-1-2-3.realhostip.com"


def test_non_owners_get_no_console(ctx, jobs):
    world = World(ctx)
    vm = world.vm(world.host(), state="Running")
    vm.hypervisor = "KVM"
    stranger = world.add(Account(name=world.name("stranger"), domain_id=world.account.domain_id))
    user = world.add(User(username=world.name("user"), password_hash="x", account_id=stranger.id))
    ctx.session.commit()
    jobs.engine.consoles, jobs.engine.console_endpoint = ConsoleTokens(), ("http", "127.0.0.1", 8080)
    theirs = Context(jobs.engine, ctx.session, user=user)
    with pytest.raises(PermissionDenied, match="does not have permission"):
        create_console_endpoint(theirs, SimpleNamespace(virtualmachineid=vm, token=None))
    ctx.session.rollback()
    mine = Context(jobs.engine, ctx.session, user=ctx.session.get(User, user.id))
    vm.account_id = stranger.id
    ctx.session.commit()
    assert create_console_endpoint(mine, SimpleNamespace(virtualmachineid=vm, token=None))["success"] is True
