"""Security properties of the engine, checked against a real engine process.

API (cloudstack-api.md §2.1, §3): only a request signed with the key's secret over exactly the
parameters it carries is executed; a changed, added or removed parameter, a wrong key or
secret, a missing signature, an expired or unparsable `expires` (signature version 3) are all
refused with 401 and the contract's text. A replayed URL is accepted only until its `expires`.
A user key may call the user commands and no admin command.

Agent channel (docs/agent.md): only a certificate issued by the engine's CA, valid now, whose
common name is the registering guid, may register a host; enrollment needs a token that is
known, unused, unexpired and, when bound, bound to that guid.

Requests are signed here by an implementation of §2.1 of the contract, not by the engine's own
code. Each test adds its checks to the "Security" section of docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cs import CloudStack

from bench import report
from stackwright.protocol.framing import Frame, encode_frame, read_frame
from stackwright.protocol.messages import (
    CaAnswer,
    Enroll,
    EnrollAnswer,
    ErrorAnswer,
    GetCa,
    Goodbye,
    HostInfo,
    RegisterAnswer,
    RegisterRequest,
)
from stackwright.protocol.pki import (
    CertificateAuthority,
    cert_to_pem,
    client_context,
    enrollment_context,
    key_to_pem,
    new_key_and_csr,
    token_digest,
    write_file_atomic,
)
from tests.support.engine import EngineProcess
from tests.support.hierarchy import new_cluster, new_pod, new_zone

BAD_CREDENTIALS = "unable to verify user credentials and/or request signature"
# The caller's role does not allow the command (432); the text ends with the account's name.
ROLE_DENIED = "The API [%s] does not exist or is not available for the account "
ADMIN_COMMANDS_FOR_USERS = ("createZone", "listHosts", "updateConfiguration", "createAgentEnrollmentToken",
                            "createAccount", "listConfigurations", "deleteZone", "addHost")

# Every check of the file, in order, for the one "Security" section.
ROWS: list[list[str]] = []


# --- the engine -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A private engine (SQLite, TLS agent listener) with a Simulator cluster and a user account."""
    workdir = tmp_path_factory.mktemp("security")
    engine = EngineProcess(workdir / "engine", "sqlite:///%s" % (workdir / "engine" / "cloud.db"))
    engine.start()
    try:
        api = engine.client()
        unique = uuid.uuid4().hex[:6]
        zone = new_zone(api, unique)
        pod = new_pod(api, zone, unique)
        cluster = new_cluster(api, pod, unique)
        account = api.createAccount(username="user" + unique, password="pw-" + unique, email="u@example.org",
                                    firstname="U", lastname="Ser", accounttype=0)["account"]
        user = account["user"][0]
        keys = api.registerUserKeys(id=user["id"])["userkeys"]
        engine.world = {
            "api": api, "zone": zone, "pod": pod, "cluster": cluster, "user": user,
            "user_keys": (keys["apikey"], keys["secretkey"]), "workdir": workdir,
            "ca": CertificateAuthority.load(engine.workdir / "pki"),
        }
        yield engine
    finally:
        engine.kill()


# --- signing and sending, after cloudstack-api.md §2.1 ---------------------------------------------


def java_encode(value):
    """Java URLEncoder as CloudStack signs: unreserved A-Z a-z 0-9 - _ . *, the rest %XX (space %20)."""
    return urllib.parse.quote(value, safe="*").replace("~", "%7E")


def signature_of(pairs, secret):
    params = dict(reversed(pairs))  # the first value of a repeated name counts
    query = "&".join("%s=%s" % (k, java_encode(v)) for k, v in sorted(params.items())
                     if k.lower() != "signature").lower()
    return base64.b64encode(hmac.new(secret.encode(), query.encode(), hashlib.sha1).digest()).decode()


def expires_in(seconds):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S+0000")


def signed(params, keys, v3_expires=None):
    """The pairs of a request signed with `keys` (apiKey, secret); v3 with `expires` when given."""
    pairs = list(params.items()) + [("response", "json"), ("apiKey", keys[0])]
    if v3_expires is not None:
        pairs += [("signatureVersion", "3"), ("expires", v3_expires)]
    return pairs + [("signature", signature_of(pairs, keys[1]))]


def send(engine, pairs, method="GET", form=None):
    """Send `pairs` (in the query; with POST, `form` goes in the body); returns (status, body)."""
    url = engine.endpoint + "?" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)
    data = urllib.parse.urlencode(form or [], quote_via=urllib.parse.quote).encode() if method == "POST" else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def replace(pairs, name, value):
    return [(k, value if k == name else v) for k, v in pairs]


def without(pairs, name):
    return [(k, v) for k, v in pairs if k != name]


# --- checks and the table --------------------------------------------------------------------------


class Checks:
    """Rows of check -> expected -> observed; a test fails if any of its rows does not hold."""

    def __init__(self, area):
        self.area = area
        self.rows = []

    def answer(self, check, expected_status, expected_text, status, body, key=None):
        """An API answer: status and errortext as expected, in the CloudStack envelope."""
        inner = next(iter(body.values())) if isinstance(body, dict) and len(body) == 1 else body
        text = inner.get("errortext") if isinstance(inner, dict) else None
        ok = status == expected_status and (expected_text is None or text == expected_text)
        if key is not None:
            ok = ok and list(body) == [key]
        if status == 401:
            ok = ok and isinstance(inner, dict) and "cserrorcode" not in inner and inner.get("errorcode") == 401
        expected = "%d %s" % (expected_status, _quoted(expected_text) if expected_text else "")
        observed = "%d %s" % (status, _quoted(text) if text and text != expected_text else "")
        self.add(check, expected.strip(), observed.strip() if not ok else "as expected", ok)

    def add(self, check, expected, observed, ok):
        self.rows.append([self.area, check, expected, observed, "yes" if ok else "**NO**"])

    def finish(self, record_reliability):
        ROWS.extend(self.rows)
        record_reliability("Security", security_section())
        failed = [r for r in self.rows if r[4] != "yes"]
        assert not failed, "\n".join("%s: expected %s, observed %s" % (r[1], r[2], r[3]) for r in failed)


def _quoted(text):
    return '"%s"' % text if len(text) < 90 else '"%s…"' % text[:87]


def security_section():
    return "\n".join([
        "Each row is one check against a real engine (SQLite, TLS agent listener), run by",
        "`tests/faults/test_security.py`; requests are signed there after cloudstack-api.md §2.1, not by",
        "the engine's code. 401 answers carry no `cserrorcode`, as the contract says.", "",
        report.table(["area", "check", "expected", "observed", "holds"], ROWS), "",
        "Verdict: %s" % report.verdict(all(r[4] == "yes" for r in ROWS)), "",
    ] + ([] if all(r[4] == "yes" for r in ROWS) else [
        "A row that does not hold is a known gap when its test is marked xfail in the file (with the",
        "reason); otherwise it is a regression.", ""]))


# --- API: signatures ---------------------------------------------------------------------------------


def test_signed_requests_cannot_be_altered(site, record_reliability):
    checks = Checks("API signature")
    admin = (site.api_key, site.api_secret)
    unique = uuid.uuid4().hex[:6]
    request = signed({"command": "listZones", "name": "zone-" + unique}, admin)
    checks.answer("correctly signed request (baseline)", 200, None, *send(site, request))

    status, body = send(site, replace(request, "name", "other-" + unique))
    checks.answer("parameter value changed after signing", 401, BAD_CREDENTIALS, status, body, "listzonesresponse")
    status, body = send(site, request + [("keyword", "x")])
    checks.answer("parameter added after signing", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, without(request, "name"))
    checks.answer("parameter removed after signing", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, replace(request, "command", "deleteZone"))
    checks.answer("command changed after signing (listZones → deleteZone)", 401, BAD_CREDENTIALS, status, body,
                  "deletezoneresponse")
    other = signed({"command": "listPods"}, admin)
    status, body = send(site, replace(request, "signature", dict(other)["signature"]))
    checks.answer("signature of another request", 401, BAD_CREDENTIALS, status, body)
    sig = dict(request)["signature"]
    flipped = sig[:5] + (sig[5].lower() if sig[5].isupper() else sig[5].upper() if sig[5].islower() else "A") + sig[6:]
    status, body = send(site, replace(request, "signature", flipped))
    checks.answer("one character of the signature changed", 401, BAD_CREDENTIALS, status, body)
    # The signed string is lower-cased (§2.1 step 4), so a change of letter case is not seen;
    # CloudStack behaves the same, and parameter values are matched case-insensitively anyway.
    status, body = send(site, replace(request, "name", ("zone-" + unique).upper()))
    checks.answer("letter case of a value changed after signing (not covered by the signature)", 200, None,
                  status, body)

    # A repeated parameter: the engine must run the value that was signed, never the added one.
    api = site.world["api"]
    signed_zone = new_zone(api, unique, name="signed-" + unique)
    new_zone(api, unique, name="smuggled-" + unique)
    request = signed({"command": "listZones", "name": "signed-" + unique}, admin)
    status, body = send(site, request + [("name", "smuggled-" + unique)])
    ids = [z["id"] for z in body.get("listzonesresponse", {}).get("zone", [])]
    ok = status == 401 or (status == 200 and ids == [signed_zone["id"]])
    checks.add("same parameter again in the query after signing", "401, or 200 with the signed value",
               "%d, zones %s" % (status, ids), ok)
    status, body = send(site, request, method="POST", form=[("name", "smuggled-" + unique)])
    ids = [z["id"] for z in body.get("listzonesresponse", {}).get("zone", [])]
    ok = status == 401 or (status == 200 and ids == [signed_zone["id"]])
    checks.add("same parameter in the POST body after signing the query", "401, or 200 with the signed value",
               "%d, zones %s" % (status, ids), ok)
    checks.finish(record_reliability)


def test_keys_and_missing_signatures_are_refused(site, record_reliability):
    checks = Checks("API keys")
    admin = (site.api_key, site.api_secret)
    request = signed({"command": "listZones"}, admin)
    status, body = send(site, without(request, "signature"))
    checks.answer("apiKey without a signature", 401, BAD_CREDENTIALS, status, body, "listzonesresponse")
    status, body = send(site, replace(request, "signature", ""))
    checks.answer("empty signature", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, [("command", "listZones"), ("response", "json")])
    checks.answer("no apiKey, no signature, no session", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "listZones"}, ("no-such-key-" + uuid.uuid4().hex, admin[1])))
    checks.answer("unknown apiKey (signed with the admin secret)", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "listZones"}, (admin[0], "not-the-secret")))
    checks.answer("admin apiKey, wrong secret", 401, BAD_CREDENTIALS, status, body)
    user_key, user_secret = site.world["user_keys"]
    status, body = send(site, signed({"command": "listZones"}, (user_key, admin[1])))
    checks.answer("user apiKey signed with the admin secret", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "listZones"}, (admin[0], user_secret)))
    checks.answer("admin apiKey signed with a user secret", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "noSuchCommand"}, admin))
    checks.answer("unknown command, correctly signed", 401, BAD_CREDENTIALS, status, body, "errorresponse")
    status, body = send(site, signed({"command": "listzones"}, admin))
    checks.answer("command name in the wrong case, correctly signed", 401, BAD_CREDENTIALS, status, body,
                  "errorresponse")
    checks.finish(record_reliability)


def test_expiry_and_replay(site, record_reliability):
    checks = Checks("API expiry, replay")
    admin = (site.api_key, site.api_secret)
    status, body = send(site, signed({"command": "listZones"}, admin, v3_expires=expires_in(-60)))
    checks.answer("signatureVersion=3, expires a minute ago", 401, BAD_CREDENTIALS, status, body)
    pairs = [("command", "listZones"), ("response", "json"), ("apiKey", admin[0]), ("signatureVersion", "3")]
    status, body = send(site, pairs + [("signature", signature_of(pairs, admin[1]))])
    checks.answer("signatureVersion=3 without expires", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "listZones"}, admin, v3_expires="in ten minutes"))
    checks.answer("signatureVersion=3, expires not a date", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, signed({"command": "listZones"}, admin, v3_expires="2024-05-01T12:34:56"))
    checks.answer("signatureVersion=3, expires without a time zone", 401, BAD_CREDENTIALS, status, body)

    # Replay: CloudStack keeps no nonces, so a signed URL works again until its expires passes.
    request = signed({"command": "listZones"}, admin, v3_expires=expires_in(3))
    checks.answer("signed URL (expires in 3 s), first use", 200, None, *send(site, request))
    checks.answer("same URL again before it expires (replay accepted by design)", 200, None, *send(site, request))
    deadline = time.monotonic() + 30
    status, body = send(site, request)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status, body = send(site, request)
    checks.answer("same URL replayed after its expires", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, replace(request, "expires", expires_in(600)))
    checks.answer("expired URL with expires moved forward (not re-signed)", 401, BAD_CREDENTIALS, status, body)
    status, body = send(site, without(without(request, "expires"), "signatureVersion"))
    checks.answer("expired URL with signatureVersion and expires removed", 401, BAD_CREDENTIALS, status, body)
    # Without signatureVersion=3 the expires parameter is only a signed parameter (§2.1).
    status, body = send(site, signed({"command": "listZones", "expires": expires_in(-60)}, admin))
    checks.answer("expires in the past without signatureVersion=3 (not checked, as in CloudStack)", 200, None,
                  status, body)

    # enforce.post.requests.and.timestamps: v3 and POST mandatory.
    enforce(site, True)
    try:
        status, body = send(site, signed({"command": "listZones"}, admin))
        checks.answer("enforce.post…=true: GET without signatureVersion=3", 401, BAD_CREDENTIALS, status, body)
        status, body = send(site, signed({"command": "listZones"}, admin, v3_expires=expires_in(300)))
        checks.answer("enforce.post…=true: GET with signatureVersion=3", 401, BAD_CREDENTIALS, status, body)
        form = signed({"command": "listZones"}, admin, v3_expires=expires_in(300))
        checks.answer("enforce.post…=true: POST with signatureVersion=3", 200, None,
                      *send(site, [], method="POST", form=form))
    finally:
        enforce(site, False)
    checks.finish(record_reliability)


def enforce(site, on):
    """Set enforce.post.requests.and.timestamps, the way that works whatever its value."""
    form = signed({"command": "updateConfiguration", "name": "enforce.post.requests.and.timestamps",
                   "value": "true" if on else "false"}, (site.api_key, site.api_secret), v3_expires=expires_in(300))
    status, body = send(site, [], method="POST", form=form)
    assert status == 200, body


def test_enforced_timestamps_are_at_most_15_minutes_ahead(site, record_reliability):
    checks = Checks("API expiry, replay")
    admin = (site.api_key, site.api_secret)
    enforce(site, True)
    try:
        form = signed({"command": "listZones"}, admin, v3_expires=expires_in(3600))
        checks.answer("enforce.post…=true: POST, signatureVersion=3, expires an hour ahead (over 15 min)",
                      401, BAD_CREDENTIALS, *send(site, [], method="POST", form=form))
        form = signed({"command": "listZones"}, admin, v3_expires=expires_in(600))
        checks.answer("enforce.post…=true: POST, signatureVersion=3, expires 10 minutes ahead",
                      200, None, *send(site, [], method="POST", form=form))
    finally:
        enforce(site, False)
    checks.finish(record_reliability)


# --- API: roles ----------------------------------------------------------------------------------------


def test_user_key_cannot_call_admin_commands(site, record_reliability):
    checks = Checks("API roles")
    api = site.world["api"]
    user_keys = site.world["user_keys"]
    everything = {a["name"] for a in api.listApis()["api"]}
    client = CloudStack(endpoint=site.endpoint, key=user_keys[0], secret=user_keys[1], timeout=30)
    allowed = {a["name"] for a in client.listApis()["api"]}
    checks.add("listApis for a user lists only user commands", "a strict subset without createZone",
               "%d of %d commands" % (len(allowed), len(everything)),
               allowed < everything and not allowed & set(ADMIN_COMMANDS_FOR_USERS))

    for command in ADMIN_COMMANDS_FOR_USERS:
        status, body = send(site, signed({"command": command}, user_keys))
        checks.answer("user key calls %s" % command, 432, ROLE_DENIED % command + site.world["user"]["account"] + ".",
                      status, body, command.lower() + "response")
    # Every other admin command too, with no parameters: the role is checked before them.
    denied = []
    for command in sorted(everything - allowed - set(ADMIN_COMMANDS_FOR_USERS)):
        status, body = send(site, signed({"command": command}, user_keys))
        inner = next(iter(body.values()))
        if status != 432 or not inner.get("errortext", "").startswith(ROLE_DENIED % command):
            denied.append("%s: %d %s" % (command, status, inner.get("errortext")))
    checks.add("user key calls each of the other %d admin commands" % len(everything - allowed
                                                                          - set(ADMIN_COMMANDS_FOR_USERS)),
               "432 %s for each" % _quoted(ROLE_DENIED % "<command>" + "<account>."),
               "as expected" if not denied else "; ".join(denied), not denied)

    status, body = send(site, signed({"command": "listZones"}, user_keys))
    checks.answer("user key calls listZones", 200, None, status, body, "listzonesresponse")
    status, body = send(site, signed({"command": "listAccounts", "listall": "true"}, user_keys))
    accounts = [a["name"] for a in body.get("listaccountsresponse", {}).get("account", [])]
    checks.add("user key lists accounts with listall=true", "only its own account",
               "200, %s" % accounts, status == 200 and accounts == [site.world["user"]["account"]])

    admin_user = api.listUsers(username="admin", listall=True)["user"][0]
    for command in ("getUserKeys", "registerUserKeys"):
        status, body = send(site, signed({"command": command, "id": admin_user["id"]}, user_keys))
        inner = body.get(command.lower() + "response", {})
        checks.add("user key calls %s with the admin's user id" % command, "refused, no keys in the answer",
                   "%d %s" % (status, _quoted(str(inner.get("errortext")))),
                   status in (431, 531) and "userkeys" not in inner)
    job = api.createPhysicalNetwork(name="sec-" + uuid.uuid4().hex[:6], zoneid=site.world["zone"]["id"])["jobid"]
    status, body = send(site, signed({"command": "queryAsyncJobResult", "jobid": job}, user_keys))
    checks.answer("user key reads an admin's job", 531, "Account %s does not have permission to access job %s"
                  % (site.world["user"]["account"], job), status, body)
    checks.answer("admin keys still work after all this", 200, None,
                  *send(site, signed({"command": "listZones"}, (site.api_key, site.api_secret))))
    checks.finish(record_reliability)


# --- agent channel ---------------------------------------------------------------------------------------


def host_info(guid):
    return HostInfo(hostname=guid, hypervisor="Simulator", hypervisor_version="1", arch="x86_64", cpu_sockets=1,
                    cpu_cores=2, cpu_threads=2, cpus=2, cpu_mhz=1000, memory_bytes=1 << 30, private_ip=None,
                    private_mac=None)


def register_request(site, guid):
    s = site.world
    return RegisterRequest(guid=guid, zone=s["zone"]["id"], pod=s["pod"]["id"], cluster=s["cluster"]["id"],
                           host=host_info(guid))


def exchange(site, context, *messages, timeout=15.0):
    """Connect to the agent port, send `messages` one by one (each waits for its answer), and
    return what came back: a list of messages, then "closed" or "open", or the TLS error."""
    async def run():
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", site.agent_port, ssl=context), timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            return ["connection failed: %s" % exc]
        got = []
        try:
            for seq, message in enumerate(messages, 1):
                writer.write(encode_frame(Frame(seq=seq, message=message)))
                await writer.drain()
                frame = await asyncio.wait_for(read_frame(reader), timeout)
                if frame is None:
                    return got + ["closed"]
                got.append(frame.message)
                if isinstance(frame.message, (ErrorAnswer, Goodbye)):
                    break
            # After a refusal the engine says goodbye and closes; otherwise the session stays.
            try:
                while True:
                    frame = await asyncio.wait_for(read_frame(reader), 2)
                    if frame is None:
                        return got + ["closed"]
                    got.append(frame.message)
            except TimeoutError:
                return got + ["open"]
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
            return got + ["closed: %s" % type(exc).__name__]
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (ssl.SSLError, OSError, TimeoutError):
                pass

    return asyncio.run(run())


def credentials(site, name, key_pem, cert_pem, ca_pem=None):
    folder = site.world["workdir"] / "agents" / name
    write_file_atomic(folder / "cloud.key", key_pem, 0o600)
    write_file_atomic(folder / "cloud.crt", cert_pem, 0o600)
    write_file_atomic(folder / "cloud.ca.crt", ca_pem or site.world["ca"].ca_pem.encode(), 0o600)
    return client_context(folder / "cloud.ca.crt", folder / "cloud.crt", folder / "cloud.key")


def handmade_cert(cn, signer_key, issuer, not_before, not_after, public_key=None):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer).public_key(public_key or key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer_key or key, hashes.SHA256()))
    return key_to_pem(key), cert_to_pem(cert)


def host_names(site):
    hosts = site.world["api"].listHosts(clusterid=site.world["cluster"]["id"]).get("host", [])
    return {h["name"] for h in hosts}


def describe(got):
    return ", ".join(m if isinstance(m, str) else "%s(%s)" % (m.type_name(), getattr(m, "code", "")) for m in got)


def refused_tls(got):
    """The TLS handshake or the first read failed: nothing was accepted."""
    return not any(isinstance(m, RegisterAnswer) for m in got) and (
        got[-1].startswith(("connection failed", "closed")) if isinstance(got[-1], str) else False)


def handshake_failures(site):
    return site.log_file.read_text(errors="replace").count("TLS handshake with 127.0.0.1:")


def test_agent_certificates(site, record_reliability):
    checks = Checks("agent certificates")
    ca = site.world["ca"]
    now = dt.datetime.now(dt.timezone.utc)
    failures_before = handshake_failures(site)

    guid = "valid-%s" % uuid.uuid4().hex[:6]
    got = exchange(site, credentials(site, guid, *ca.issue_client_cert(guid, days=1)), register_request(site, guid))
    checks.add("certificate from the engine's CA, guid = common name (baseline)", "RegisterAnswer",
               describe(got), isinstance(got[0], RegisterAnswer))

    guid = "nocert-%s" % uuid.uuid4().hex[:6]
    got = exchange(site, enrollment_context(), register_request(site, guid))
    ok = isinstance(got[0], ErrorAnswer) and got[0].code == "certificate_required" and got[-1].startswith("closed")
    checks.add("TLS without a client certificate registers", "ErrorAnswer(certificate_required), closed",
               describe(got), ok)
    got = exchange(site, None, register_request(site, guid))
    checks.add("plain TCP to the TLS listener registers", "handshake fails, closed", describe(got),
               refused_tls(got))

    guid = "selfsigned-%s" % uuid.uuid4().hex[:6]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, guid)])
    key, cert = handmade_cert(guid, None, subject, now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
    got = exchange(site, credentials(site, guid, key, cert), register_request(site, guid))
    checks.add("self-signed certificate", "handshake fails, closed", describe(got), refused_tls(got))

    guid = "foreign-%s" % uuid.uuid4().hex[:6]
    foreign = CertificateAuthority.load_or_create(site.world["workdir"] / "foreign-ca")
    got = exchange(site, credentials(site, guid, *foreign.issue_client_cert(guid)), register_request(site, guid))
    checks.add("certificate from another CA", "handshake fails, closed", describe(got), refused_tls(got))

    guid = "expired-%s" % uuid.uuid4().hex[:6]
    key, cert = handmade_cert(guid, ca.key, ca.cert.subject, now - dt.timedelta(days=10), now - dt.timedelta(days=1))
    got = exchange(site, credentials(site, guid, key, cert), register_request(site, guid))
    checks.add("expired certificate from the engine's CA", "handshake fails, closed", describe(got),
               refused_tls(got))

    guid = "early-%s" % uuid.uuid4().hex[:6]
    key, cert = handmade_cert(guid, ca.key, ca.cert.subject, now + dt.timedelta(days=1), now + dt.timedelta(days=2))
    got = exchange(site, credentials(site, guid, key, cert), register_request(site, guid))
    checks.add("certificate not yet valid", "handshake fails, closed", describe(got), refused_tls(got))

    # The five refusals above happened in the engine's handshake, each logged with the peer.
    deadline = time.monotonic() + 10
    while handshake_failures(site) - failures_before < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = handshake_failures(site) - failures_before
    checks.add("engine log names each refused handshake", '5 "TLS handshake with … failed" lines',
               "%d lines" % logged, logged == 5)

    owner, victim = "owner-%s" % uuid.uuid4().hex[:6], "victim-%s" % uuid.uuid4().hex[:6]
    got = exchange(site, credentials(site, owner, *ca.issue_client_cert(owner, days=1)),
                   register_request(site, victim))
    ok = isinstance(got[0], ErrorAnswer) and got[0].code == "identity_mismatch" and got[-1].startswith("closed")
    checks.add("valid certificate, registering as another guid", "ErrorAnswer(identity_mismatch), closed",
               describe(got), ok)

    refused = {"nocert", "selfsigned", "foreign", "expired", "early", "victim"}
    created = {name for name in host_names(site) if name.split("-")[0] in refused}
    checks.add("hosts created by the refused agents", "none", ", ".join(sorted(created)) or "none", not created)
    checks.finish(record_reliability)


def enroll(site, token, guid):
    """GetCa then Enroll over TLS without a client certificate; returns what came back."""
    secret = token.split(".")[0]
    _key, csr = new_key_and_csr(guid)
    return exchange(site, enrollment_context(), GetCa(), Enroll(token=secret, csr_pem=csr.decode(), guid=guid,
                                                                hostname=guid))


def refusal(got, text):
    return any(isinstance(m, ErrorAnswer) and m.code == "enrollment_refused" and text in m.message for m in got)


def test_enrollment_tokens(site, record_reliability):
    checks = Checks("agent enrollment")
    api = site.world["api"]

    def token(**params):
        return api.createAgentEnrollmentToken(**params)["agentenrollmenttoken"]["token"]

    guid = "enrolled-%s" % uuid.uuid4().hex[:6]
    good = token()
    got = enroll(site, good, guid)
    answers = [m for m in got if isinstance(m, EnrollAnswer)]
    ok = isinstance(got[0], CaAnswer) and len(answers) == 1 and site.world["ca"].verify(answers[0].cert_pem) == guid
    checks.add("known, unused token (baseline): certificate issued for the guid", "CaAnswer, EnrollAnswer",
               describe(got), ok)
    got = enroll(site, good, "again-%s" % uuid.uuid4().hex[:6])
    checks.add("the same token a second time", "refused: unknown or already used", describe(got),
               refusal(got, "enrollment token is unknown or was already used"))

    fingerprint = good.split(".")[1]
    got = enroll(site, "%s.%s" % (uuid.uuid4().hex, fingerprint), "unknown-%s" % uuid.uuid4().hex[:6])
    checks.add("a token the engine never issued", "refused: unknown or already used", describe(got),
               refusal(got, "enrollment token is unknown or was already used"))

    bound = token(guid="somebody-else")
    got = enroll(site, bound, "thief-%s" % uuid.uuid4().hex[:6])
    checks.add("a token bound to another guid", "refused: issued for host guid somebody-else", describe(got),
               refusal(got, "enrollment token was issued for host guid somebody-else"))

    stale = token(ttl=60)
    # Tokens live at least 60 s; rather than wait, its expiry is moved into the past in the database.
    with sqlite3.connect(site.db_url.split("sqlite:///", 1)[1]) as db:
        changed = db.execute("UPDATE enrollment_token SET expires_at = ? WHERE digest = ?",
                             (time.time() - 1, token_digest(stale.split(".")[0]))).rowcount
    assert changed == 1
    got = enroll(site, stale, "late-%s" % uuid.uuid4().hex[:6])
    checks.add("an expired token", "refused: expired", describe(got), refusal(got, "enrollment token has expired"))

    # The engine takes a token out of its store before checking it: a token presented with the
    # wrong guid is spent, so a token seen by the wrong host cannot be used later by anyone.
    got = enroll(site, bound, "somebody-else")
    checks.add("the bound token, by its own guid, after a refused attempt", "refused: spent by that attempt",
               describe(got), refusal(got, "enrollment token is unknown or was already used"))

    # An enrolled agent registers with its new certificate and its host comes Up.
    guid = "fresh-%s" % uuid.uuid4().hex[:6]
    key_pem, csr = new_key_and_csr(guid)
    secret = token().split(".")[0]
    got = exchange(site, enrollment_context(), Enroll(token=secret, csr_pem=csr.decode(), guid=guid, hostname=guid))
    cert = next(m.cert_pem for m in got if isinstance(m, EnrollAnswer))
    got = exchange(site, credentials(site, guid, key_pem, cert.encode()), register_request(site, guid))
    registered = isinstance(got[0], RegisterAnswer)
    hosts = site.world["api"].listHosts(clusterid=site.world["cluster"]["id"], name=guid).get("host", [])
    checks.add("enrolled agent registers with its certificate", "RegisterAnswer, host listed",
               "%s; host %s" % (describe(got), [h["state"] for h in hosts]), registered and len(hosts) == 1)
    checks.finish(record_reliability)
