import json
import stat

from stackwright.agent.config import PropertiesFile
from stackwright.agent.setup import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_writes_properties_idempotently_and_keeps_unknown_keys(tmp_path, capsys):
    path = tmp_path / "agent.properties"
    path.write_text("# site notes\nresource=com.cloud.hypervisor.kvm.resource.LibvirtComputingResource\n")
    args = ["--properties", str(path), "--host", "10.0.0.1", "--zone", "1", "--pod", "2", "--cluster", "3",
            "--private-device", "cloudbr0", "--set", "local.custom=yes", "--json"]
    code, out, _err = run(capsys, *args)
    assert code == 0
    first = json.loads(out)
    assert first["changed"] and not first["enrolled"]
    props = PropertiesFile.read(path).as_dict()
    assert props["resource"].endswith("LibvirtComputingResource")
    assert props["private.network.device"] == "cloudbr0" and props["local.custom"] == "yes"
    assert props["guid"] == first["guid"]
    assert props["tls.cert.file"] == str(tmp_path / "cloud.crt")
    assert path.read_text().startswith("# site notes\n")
    code, out, _err = run(capsys, *args)
    assert json.loads(out) == {**first, "changed": False, "properties_changed": False}
    # the guid is generated once and then kept
    code, out, _err = run(capsys, "--properties", str(path), "--zone", "9", "--json")
    assert json.loads(out)["guid"] == first["guid"]


def test_invalid_values_leave_the_file_alone(tmp_path, capsys):
    path = tmp_path / "agent.properties"
    path.write_text("host=10.0.0.1\nguid=g\n")
    code, _out, err = run(capsys, "--properties", str(path), "--port", "99999")
    assert code == 1
    assert "port=99999 is out of range; use 1..65535" in err and "Traceback" not in err
    assert path.read_text() == "host=10.0.0.1\nguid=g\n"
    code, _out, err = run(capsys, "--properties", str(path), "--set", "novalue")
    assert code == 1 and "--set 'novalue': expected KEY=VALUE" in err


def test_token_needs_tls_and_a_well_formed_token(tmp_path, capsys):
    path = tmp_path / "agent.properties"
    code, _out, err = run(capsys, "--properties", str(path), "--host", "h", "--no-tls", "--token", "x.y")
    assert code == 1 and "enrollment needs TLS" in err
    code, _out, err = run(capsys, "--properties", str(path), "--tls", "--token", "abc")
    assert code == 1 and "enrollment token is malformed" in err


def test_secret_keys_make_the_file_private(tmp_path, capsys):
    path = tmp_path / "agent.properties"
    code, _out, _err = run(capsys, "--properties", str(path), "--host", "h", "--set", "keystore.passphrase=pw")
    assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
