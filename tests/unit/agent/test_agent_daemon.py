import logging

import pytest

from stackwright.agent.config import AgentConfig
from stackwright.agent.daemon import build_dispatcher, build_ssl_context, main, setup_logging
from stackwright.agent.errors import ConfigError
from stackwright.protocol import messages as m
from stackwright.protocol.pki import CertificateAuthority, write_file_atomic


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def config(tmp_path, **props):
    base = {"host": "127.0.0.1", "guid": "g", "tls.key.file": str(tmp_path / "cloud.key"),
            "tls.cert.file": str(tmp_path / "cloud.crt"), "tls.ca.file": str(tmp_path / "cloud.ca.crt")}
    return AgentConfig.from_properties({**base, **props})


def test_simulator_driver_from_properties(tmp_path):
    dispatcher = build_dispatcher(config(tmp_path, **{"hypervisor.driver": "simulator", "simulator.cpus": "2",
                                                      "simulator.memory.mb": "1024"}))
    ready = dispatcher.run(m.Ready())
    assert ready.healthy and ready.host.cpus == 2 and ready.host.memory_bytes == 1 << 30
    dispatcher.close()


def test_libvirt_driver_from_properties(tmp_path):
    pytest.importorskip("libvirt")
    dispatcher = build_dispatcher(config(tmp_path, **{"libvirt.uri": "test:///default"}))
    ready = dispatcher.run(m.CheckHealth())
    assert ready.healthy and ready.host.hypervisor == "KVM"
    dispatcher.close()


def test_tls_files_are_checked_with_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="cloud.crt is missing.*Enroll this host first"):
        build_ssl_context(config(tmp_path))
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    key_pem, cert_pem = ca.issue_client_cert("g")
    write_file_atomic(tmp_path / "cloud.key", key_pem)
    write_file_atomic(tmp_path / "cloud.crt", b"not a certificate")
    write_file_atomic(tmp_path / "cloud.ca.crt", ca.ca_pem.encode())
    with pytest.raises(ConfigError, match="cannot load the agent's TLS files .* --force-enroll"):
        build_ssl_context(config(tmp_path))
    write_file_atomic(tmp_path / "cloud.crt", cert_pem)
    assert build_ssl_context(config(tmp_path)) is not None
    assert build_ssl_context(config(tmp_path, **{"tls.enabled": "false"})) is None


def test_unwritable_log_file_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot open log file .*; pass --log-file"):
        setup_logging(blocker / "agent.log", "INFO")


def test_bad_properties_exit_with_a_message(tmp_path, capsys):
    path = tmp_path / "agent.properties"
    path.write_text("host=h\nguid=g\nworkers=lots\n")
    assert main(["--properties", str(path), "--log-file", str(tmp_path / "agent.log")]) == 1
    err = capsys.readouterr().err
    assert "workers='lots' is not a whole number" in err and "Traceback" not in err
    assert "workers='lots'" in (tmp_path / "agent.log").read_text()
