"""Start-up options: the agents' reconnect grace from the command line or server.properties."""

import pytest

from stackwright.management.options import load


def test_reconnect_grace_defaults_and_overrides(tmp_path):
    assert load(["--db-url", "sqlite:///x.db"]).agent_reconnect_grace == 60.0
    config = tmp_path / "server.properties"
    config.write_text("agent.reconnect.grace=120\n")
    assert load(["--config", str(config)]).agent_reconnect_grace == 120.0
    assert load(["--config", str(config), "--agent-reconnect-grace", "5"]).agent_reconnect_grace == 5.0


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_an_unusable_reconnect_grace_stops_the_start(tmp_path, value):
    config = tmp_path / "server.properties"
    config.write_text("agent.reconnect.grace=%s\n" % value)
    with pytest.raises(SystemExit) as stopped:
        load(["--config", str(config)])
    assert str(stopped.value).startswith("invalid agent.reconnect.grace %s: expected" % value)


def test_server_properties_are_read_as_java_properties(tmp_path):
    config = tmp_path / "server.properties"
    config.write_text(
        "# engine\n"
        "db.url = mysql+pymysql\\://cloud:pw@127.0.0.1/cloud?\\\n"
        "         charset=utf8mb4\n"
        "api.listen : 127.0.0.1\\:9080\n"
        "log.file=/var/log/with\\ space.log\n"
        "agent.tls=false\n"
    )
    options = load(["--config", str(config)])
    assert options.db_url == "mysql+pymysql://cloud:pw@127.0.0.1/cloud?charset=utf8mb4"
    assert (options.listen_host, options.listen_port) == ("127.0.0.1", 9080)
    assert options.log_file == "/var/log/with space.log"
    assert options.agent_tls is False
