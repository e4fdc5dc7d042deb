"""cs_agent in-process: the properties editor, the certificate check, check mode, and failures that keep the host as it was.

Enrollment against a live engine is covered by tests/integration/targets/cs_agent.
"""

from __future__ import annotations

import datetime
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ansible_collections.stackwright.cloudstack.plugins.module_utils import agent_properties as props
from ansible_collections.stackwright.cloudstack.plugins.modules import cs_agent
from stackwright.agent.config import PropertiesFile
from stackwright.protocol.pki import CertificateAuthority, cert_to_pem, new_private_key

SETUP_AGENT = str(Path(sys.executable).parent / "stackwright-setup-agent")

SHIPPED = """\
# Sample configuration file for the agent
#Mon Jan 01 00:00:00 UTC 2024
resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource
host=10.0.0.1
workers = 5
long.value = first \\
    second
"""


# -- the properties editor --------------------------------------------------------------


def test_set_values_keeps_comments_order_and_unknown_keys():
    text = props.set_values(SHIPPED, {"host": "10.0.0.2,10.0.0.3", "zone": "z1"})
    assert text.splitlines() == [
        "# Sample configuration file for the agent",
        "#Mon Jan 01 00:00:00 UTC 2024",
        "resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource",
        "host=10.0.0.2,10.0.0.3",
        "workers = 5",
        "long.value = first \\",
        "    second",
        "zone=z1",
    ]


def test_equal_values_stay_byte_for_byte_and_continued_lines_are_one_entry():
    assert props.set_values(SHIPPED, {"workers": "5", "long.value": "first second"}) == SHIPPED
    changed = props.set_values(SHIPPED, {"long.value": "one"})
    assert changed.splitlines()[-1] == "long.value=one"
    assert "    second" not in changed


def test_last_occurrence_is_the_one_read_and_rewritten():
    text = "port=1\nport=2\n"
    assert props.read_values(text) == {"port": "2"}
    assert props.set_values(text, {"port": "3"}) == "port=1\nport=3\n"


@pytest.mark.parametrize("key, value", [
    ("odd key=:#!", "value with = and : inside"),
    ("path", "C:\\agent\\keys"),
    ("lead", "  two leading blanks"),
    ("multi", "line one\nline two\ttab"),
    ("unicode", "zone-\u00e9t\u00e9"),
])
def test_written_values_read_back_the_same_here_and_in_the_agent(tmp_path, key, value):
    text = props.set_values("# c\n", {key: value})
    assert props.read_values(text)[key] == value
    path = tmp_path / "agent.properties"
    path.write_text(text)
    assert PropertiesFile.read(path).as_dict()[key] == value


def test_secret_values_are_masked():
    text = "host=1.2.3.4\ndb.password=hunter2\napi.token=abc\n"
    assert props.holds_secrets(text)
    assert props.masked(text) == "host=1.2.3.4\ndb.password=********\napi.token=********\n"
    assert not props.holds_secrets("host=1.2.3.4\n")


# -- the certificate check ------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority.load_or_create(tmp_path / "ca")


def write_identity(directory, ca, guid, key_pem=None, cert_pem=None):
    directory.mkdir(parents=True, exist_ok=True)
    if key_pem is None:
        key_pem, cert_pem = ca.issue_client_cert(guid)
    files = directory / "cloud.key", directory / "cloud.crt", directory / "cloud.ca.crt"
    for path, data in zip(files, (key_pem, cert_pem, ca.ca_pem.encode()), strict=True):
        path.write_bytes(data)
    return [str(path) for path in files]


def expired_cert(ca, guid):
    key = new_private_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, guid)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    from stackwright.protocol.pki import key_to_pem

    return key_to_pem(key), cert_to_pem(cert)


def test_valid_identity_passes_and_names_no_problem(tmp_path, ca):
    files = write_identity(tmp_path / "agent", ca, "guid-1")
    assert cs_agent.certificate_problem(*files, guid="guid-1") is None
    assert cs_agent.certificate_problem(*files, guid="guid-1", expected_ca=ca.fingerprint) is None
    assert cs_agent.ca_fingerprint(files[2]) == ca.fingerprint


def test_identity_problems_are_named(tmp_path, ca):
    files = write_identity(tmp_path / "agent", ca, "guid-1")
    assert cs_agent.certificate_problem(*files, guid="guid-2") == (
        "agent certificate %s was issued to guid guid-1, not guid-2" % files[1])
    assert cs_agent.certificate_problem(*files, guid="guid-1", expected_ca="0" * 64) == (
        "CA certificate %s is not the CA of the enrollment token" % files[2])

    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")
    key, cert = foreign.issue_client_cert("guid-1")
    files = write_identity(tmp_path / "foreign-cert", ca, "guid-1", key, cert)
    problem = cs_agent.certificate_problem(*files, guid="guid-1")
    assert problem.startswith("agent certificate %s does not hold up against %s: " % (files[1], files[2]))
    assert problem.endswith("unable to get local issuer certificate")

    other_key, _other_cert = ca.issue_client_cert("guid-1")
    _key, cert = ca.issue_client_cert("guid-1")
    files = write_identity(tmp_path / "mismatch", ca, "guid-1", other_key, cert)
    assert "KEY_VALUES_MISMATCH" in cs_agent.certificate_problem(*files, guid="guid-1")

    files = write_identity(tmp_path / "expired", ca, "guid-1", *expired_cert(ca, "guid-1"))
    assert "certificate has expired" in cs_agent.certificate_problem(*files, guid="guid-1")

    Path(files[0]).unlink()
    assert cs_agent.certificate_problem(*files, guid="guid-1") == "agent key %s is missing" % files[0]


# -- the module -----------------------------------------------------------------------------


def agent_args(path, **overrides):
    args = {"properties_file": str(path), "management_hosts": ["127.0.0.1"], "setup_agent_command": SETUP_AGENT}
    args.update(overrides)
    return args


def test_file_written_once_with_comments_kept_and_stable_guid(run_module, tmp_path):
    path = tmp_path / "agent.properties"
    path.write_text(SHIPPED)
    first = run_module(cs_agent.main, agent_args(path, zone="z1", workers=3, enroll=False), connection=False)
    assert first["changed"] and first["restart_required"] and not first["enrolled"]
    assert first["guid"] == cs_agent.stable_guid(str(path))
    values = props.read_values(path.read_text())
    assert (values["host"], values["zone"], values["workers"], values["guid"]) == ("127.0.0.1", "z1", "3", first["guid"])
    assert values["tls.cert.file"] == str(tmp_path / "cloud.crt")
    assert path.read_text().startswith(SHIPPED.split("host=", maxsplit=1)[0])
    assert first["diff"]["before"] == SHIPPED and first["diff"]["after"] == path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    second = run_module(cs_agent.main, agent_args(path, zone="z1", workers=3, enroll=False), connection=False)
    assert not second["changed"] and not second["restart_required"]
    assert second["guid"] == first["guid"]


def test_several_engines_and_how_the_agent_picks_one(run_module, tmp_path):
    path = tmp_path / "agent.properties"
    result = run_module(cs_agent.main, agent_args(path, management_hosts=["10.0.0.1", "10.0.0.2:9250"],
                                                  lb_algorithm="roundrobin", lb_check_interval=60, enroll=False),
                        connection=False)
    assert result["changed"]
    values = props.read_values(path.read_text())
    assert values["host"] == "10.0.0.1,10.0.0.2:9250"
    assert (values["indirect.agent.lb.algorithm"], values["indirect.agent.lb.check.interval"]) == ("roundrobin", "60")


def test_secret_keys_make_the_file_private_and_are_masked(run_module, tmp_path):
    path = tmp_path / "agent.properties"
    result = run_module(cs_agent.main, agent_args(path, enroll=False, extra_properties={"vnc.password": "hunter2"}),
                        connection=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "vnc.password=hunter2" in path.read_text()
    assert "hunter2" not in str(result)


def test_check_mode_predicts_enrollment_and_touches_nothing(run_module, tmp_path):
    path = tmp_path / "etc" / "agent.properties"
    # The connection points at a closed port: asking for a token would fail the run.
    result = run_module(cs_agent.main, dict(agent_args(path), _ansible_check_mode=True))
    assert result["changed"] and result["enrolled"] and result["restart_required"]
    assert result["enrollment_reason"] == "agent key %s is missing" % (tmp_path / "etc" / "cloud.key")
    assert not (tmp_path / "etc").exists()


def test_enrolled_host_is_left_alone(run_module, tmp_path, ca):
    path = tmp_path / "agent.properties"
    guid = "guid-enrolled"
    write_identity(tmp_path, ca, guid)
    result = run_module(cs_agent.main, agent_args(path, guid=guid))
    assert result["changed"] and not result["enrolled"]
    again = run_module(cs_agent.main, agent_args(path))
    assert not again["changed"] and again["guid"] == guid


def test_disabled_tls_never_enrolls(run_module, tmp_path):
    path = tmp_path / "agent.properties"
    result = run_module(cs_agent.main, agent_args(path, tls=False))
    assert result["changed"] and not result["enrolled"]
    assert "tls.enabled=false" in path.read_text().splitlines()


@pytest.mark.parametrize("overrides, message", [
    ({"port": 0}, "port 0 is not a TCP port; use 1 to 65535"),
    ({"workers": 1000}, "workers 1000 is out of range; use 1 to 256"),
    ({"lb_check_interval": -1}, "lb_check_interval -1 is out of range; use 0 to 86400 seconds"),
    ({"management_hosts": ["10.0.0.1,10.0.0.2"]}, "management_hosts must list one or more addresses, one per item"),
    ({"extra_properties": {"guid": "x"}}, "extra_properties: 'guid' cannot be set there; use its own option"),
    ({"enrollment_token_ttl": 5}, "enrollment_token_ttl must be between 60 and 604800 seconds"),
    ({"enrollment_token": "short"}, "enrollment_token is malformed"),
    ({"setup_agent_command": "/nonexistent/setup"}, "setup_agent_command /nonexistent/setup is not an executable file"),
])
def test_bad_input_fails_clearly_and_writes_nothing(run_module, tmp_path, overrides, message):
    path = tmp_path / "agent.properties"
    path.write_text(SHIPPED)
    result = run_module(cs_agent.main, agent_args(path, **overrides), connection=False)
    assert result["failed"] is True
    assert message in result["msg"]
    assert path.read_text() == SHIPPED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.properties"]


def test_enrollment_needs_a_token_source(run_module, tmp_path):
    result = run_module(cs_agent.main, agent_args(tmp_path / "agent.properties"), connection=False)
    assert result["failed"] is True
    assert result["msg"].startswith("the host needs an enrollment token: set enrollment_token, or the connection "
                                    "options so the module can ask the engine for one (missing CloudStack connection")
    assert not (tmp_path / "agent.properties").exists()


def test_failed_enrollment_keeps_the_old_file_and_hides_the_token(run_module, tmp_path, ca):
    path = tmp_path / "agent.properties"
    path.write_text(SHIPPED)
    # Port 9 on loopback: no engine there, so the real stackwright-setup-agent fails to enroll.
    token = "very-secret-value.%s" % ca.fingerprint
    result = run_module(cs_agent.main, agent_args(path, port=9, zone="z2", enrollment_token=token,
                                                  enrollment_timeout=5), connection=False)
    assert result["failed"] is True
    assert result["msg"].startswith("enrolling with the engine failed: cannot reach any engine to enroll: 127.0.0.1:9")
    assert result["msg"].endswith("%s is unchanged" % path)
    assert "very-secret-value" not in str(result)
    assert path.read_text() == SHIPPED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.properties", "ca"]
