import stat

import pytest

from stackwright.agent.config import AgentConfig, PropertiesFile
from stackwright.agent.errors import ConfigError

SAMPLE = """# written by hand
host = 10.0.0.1, 10.0.0.2
port:8250
zone=1
! old-style comment
guid=abc-123
resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource
long.value=first \\
    second
path\\ with\\ space=x\\ty
"""


def test_java_properties_syntax(tmp_path):
    path = tmp_path / "agent.properties"
    path.write_text(SAMPLE)
    props = PropertiesFile.read(path).as_dict()
    assert props["host"] == "10.0.0.1, 10.0.0.2"
    assert props["port"] == "8250"
    assert props["long.value"] == "first second"
    assert props["path with space"] == "x\ty"
    assert "! old-style comment" not in props


def test_set_keeps_comments_order_and_unknown_keys(tmp_path):
    path = tmp_path / "agent.properties"
    path.write_text(SAMPLE)
    props = PropertiesFile.read(path)
    assert props.set("zone", "2")
    assert not props.set("port", "8250")
    assert props.set("pod", "7")
    assert props.set("long.value", "short")
    assert props.save()
    text = path.read_text()
    assert text.startswith("# written by hand\nhost = 10.0.0.1, 10.0.0.2\nport:8250\nzone=2\n! old-style comment\n")
    assert "resource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource\nlong.value=short\n" in text
    assert "    second" not in text and text.endswith("pod=7\n")
    assert not PropertiesFile.read(path).save()  # nothing changed -> not rewritten


def test_escaping_round_trips(tmp_path):
    path = tmp_path / "a.properties"
    props = PropertiesFile.read(path)
    props.set("key with=sep", " leading space and \\ backslash\n")
    props.save()
    assert PropertiesFile.read(path).as_dict() == {"key with=sep": " leading space and \\ backslash\n"}


def test_file_with_a_secret_becomes_private(tmp_path):
    path = tmp_path / "agent.properties"
    path.write_text("host=a\n")
    path.chmod(0o644)
    props = PropertiesFile.read(path)
    props.set("keystore.passphrase", "s3cret")
    props.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_typed_config_defaults():
    config = AgentConfig.from_properties({"host": "10.0.0.1,10.0.0.2", "guid": "g"})
    assert config.hosts == ["10.0.0.1", "10.0.0.2"]
    assert config.port == 8250 and config.workers == 5 and config.tls
    assert config.hypervisor_driver == "libvirt" and config.libvirt_uri == "qemu:///system"
    assert str(config.cert_file) == "/etc/cloudstack/agent/cloud.crt"
    assert config.backoff_initial <= 5


def test_unknown_keys_are_kept_aside():
    config = AgentConfig.from_properties({"host": "h", "guid": "g", "resource": "x", "local.storage.path": "/var"})
    assert config.extra == {"resource": "x", "local.storage.path": "/var"}


@pytest.mark.parametrize(
    "props, message",
    [
        ({"guid": "g"}, "host is not set; set host to the engine address"),
        ({"host": "h"}, "guid is not set; run stackwright-setup-agent"),
        ({"host": "h", "guid": "g", "port": "eighty"}, "port='eighty' is not a whole number; use 1..65535"),
        ({"host": "h", "guid": "g", "port": "0"}, "port=0 is out of range"),
        ({"host": "h", "guid": "g", "workers": "-1"}, "workers=-1 is out of range"),
        ({"host": "h", "guid": "g", "tls.enabled": "maybe"}, "tls.enabled='maybe' is not a boolean"),
        ({"host": "h", "guid": "g", "hypervisor.driver": "xen"}, "hypervisor.driver='xen' is not supported; use one of: libvirt, simulator"),
        ({"host": "h", "guid": "g", "storage.mode": "fuse"}, "storage.mode='fuse' is not supported"),
        ({"host": "h", "guid": "g", "reconnect.backoff.initial": "30"}, "reconnect.backoff.initial=30 is out of range; use 0.1..5"),
    ],
)
def test_invalid_values_are_named(props, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        AgentConfig.from_properties(props, source="agent.properties")


def test_missing_file_tells_how_to_create_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; create it with stackwright-setup-agent"):
        AgentConfig.load(tmp_path / "agent.properties")


def test_several_engines_and_the_order_they_are_tried_in():
    config = AgentConfig.from_properties({
        "host": "10.0.0.1, 10.0.0.2:9250", "guid": "g", "indirect.agent.lb.algorithm": "roundrobin",
        "indirect.agent.lb.check.interval": "30"})
    assert config.hosts == ["10.0.0.1", "10.0.0.2:9250"]
    assert (config.lb_algorithm, config.lb_check_interval) == ("roundrobin", 30.0)
    assert "indirect.agent.lb.algorithm" not in config.extra
    plain = AgentConfig.from_properties({"host": "10.0.0.1", "guid": "g"})
    assert (plain.lb_algorithm, plain.lb_check_interval) == ("static", 0.0)
    with pytest.raises(ConfigError, match="indirect.agent.lb.algorithm='weighted' is not supported"):
        AgentConfig.from_properties({"host": "10.0.0.1", "guid": "g", "indirect.agent.lb.algorithm": "weighted"})
    with pytest.raises(ConfigError, match="invalid port in engine address '10.0.0.2:0'"):
        AgentConfig.from_properties({"host": "10.0.0.1,10.0.0.2:0", "guid": "g"})
