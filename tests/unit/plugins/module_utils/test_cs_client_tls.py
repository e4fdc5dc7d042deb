"""TLS of the modules' client, against a real HTTPS server on loopback with a self-signed certificate."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import (
    CloudStackClient,
    CloudStackError,
    resolve_connection,
)


class Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's naming
        if "signature=" not in self.path:
            self.send_error(400)
            return
        body = json.dumps({"listzonesresponse": {"count": 0}} if self.status == 200 else
                          {"listzonesresponse": {"errorcode": 401, "errortext": "unable to verify user credentials"}})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def serve(certificate, status=200):
    handler = type("Handler", (Answer,), {"status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    if certificate:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, certificate))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "%s://127.0.0.1:%d/client/api" % ("https" if certificate else "http", server.server_address[1])


@pytest.fixture
def https(certificate):
    server, url = serve(certificate)
    yield url
    server.shutdown()
    server.server_close()


def test_unknown_certificate_is_refused(https):
    with pytest.raises(CloudStackError, match="cannot reach the CloudStack API at %s: .*certificate" % https):
        CloudStackClient(https, "K", "S", timeout=5).request("listZones")


def test_ca_bundle_verifies_the_server(https, certificate):
    client = CloudStackClient(https, "K", "S", timeout=5, ca_path=str(certificate[0]))
    assert client.request("listZones") == {"count": 0}


def test_validation_can_be_turned_off(https):
    assert CloudStackClient(https, "K", "S", timeout=5, validate_certs=False).request("listZones") == {"count": 0}


def test_ini_verify_and_dangerous_no_tls_verify(tmp_path, certificate):
    ini = tmp_path / "cloudstack.ini"
    ini.write_text("[cloudstack]\nendpoint = https://127.0.0.1/client/api\nkey = k\nsecret = s\nverify = %s\n"
                   "[lab]\nendpoint = https://127.0.0.1/client/api\nkey = k\nsecret = s\n"
                   "dangerous_no_tls_verify = true\n" % certificate[0])
    settings = resolve_connection({"api_config_file": str(ini), "validate_certs": True})
    assert settings["verify"] == str(certificate[0]) and settings["validate_certs"] is True
    settings = resolve_connection({"api_config_file": str(ini), "api_region": "lab", "validate_certs": True})
    assert settings["validate_certs"] is False
    # An explicit CA option wins over the file's.
    settings = resolve_connection({"api_config_file": str(ini), "api_verify_ssl_cert": "/etc/ca.pem"})
    assert settings["verify"] == "/etc/ca.pem"


def test_refused_credentials_name_the_causes():
    server, url = serve(None, status=401)
    try:
        with pytest.raises(CloudStackError) as caught:
            CloudStackClient(url, "K", "S", timeout=5).request("listZones")
    finally:
        server.shutdown()
        server.server_close()
    message = str(caught.value)
    assert message.startswith("listZones failed: unable to verify user credentials; the API at %s" % url)
    assert "api_key and api_secret" in message and "clock" in message
    assert caught.value.errorcode == 401
