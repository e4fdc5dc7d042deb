"""Signing, parameter encoding, error mapping and job polling of the stdlib API client."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import socket

import pytest
from cs import CloudStack
from cs.client import transform

from ansible_collections.stackwright.cloudstack.plugins.module_utils.cs_client import (
    CloudStackClient,
    CloudStackError,
    encode_value,
    expires_at,
    flatten_params,
    read_config_file,
    resolve_connection,
    sign,
)

SECRET = "Mm3Cx7pQ-9rT_secret+/="
ENDPOINT = "http://127.0.0.1:8080/client/api"

PARAM_SETS = [
    {"command": "listZones", "response": "json", "apiKey": "key-1"},
    {"command": "createZone", "name": "Zone One", "dns1": "8.8.8.8", "networktype": "Advanced", "apiKey": "K"},
    {"command": "listZones", "keyword": "A b/c*", "apiKey": "K", "signatureVersion": "3",
     "expires": "2030-01-01T00:00:00+0000"},
    {"command": "addHost", "url": "http://10.0.0.5/path?x=1&y=2", "hosttags": "perf,gpu", "apiKey": "K"},
    {"command": "updateConfiguration", "name": "host", "value": "Zürich é €", "Zeta": "Upper", "alpha": "lower"},
    {"command": "createPod", "details[0].key": "k", "details[0].value": "v=1;2", "apiKey": "K"},
]


@pytest.mark.parametrize("params", PARAM_SETS)
def test_signature_matches_the_cs_client(params):
    reference = dict(params)
    CloudStack(endpoint=ENDPOINT, key="K", secret=SECRET)._sign(reference)
    assert sign(params, SECRET) == reference["signature"]


def test_signature_ignores_an_existing_signature_parameter():
    params = {"command": "listZones", "apiKey": "K"}
    assert sign(dict(params, signature="stale", Signature="x"), SECRET) == sign(params, SECRET)


def test_values_are_encoded_like_java_urlencoder():
    # cs leaves "~" raw (Python's quote); java.net.URLEncoder, which CloudStack verifies with, does not.
    assert encode_value("a b~c/d*e-f_g.h") == "a%20b%7Ec%2Fd*e-f_g.h"
    assert encode_value("é") == "%C3%A9"


def test_tilde_is_signed_as_cloudstack_verifies_it():
    params = {"command": "listZones", "keyword": "a~b", "apiKey": "K"}
    digest = hmac.new(SECRET.encode(), b"apikey=k&command=listzones&keyword=a%7eb", hashlib.sha1).digest()
    assert sign(params, SECRET) == base64.b64encode(digest).decode()
    reference = dict(params)
    CloudStack(endpoint=ENDPOINT, key="K", secret=SECRET)._sign(reference)
    assert sign(params, SECRET) != reference["signature"]


@pytest.mark.parametrize("params", [
    {"a": True, "b": False, "c": 3, "d": 1.5, "e": "x"},
    {"tags": ["perf", "gpu"], "empty": [], "none": None},
    {"details": {"key": "k", "value": "v"}},
    {"details": [{"key": "k1", "value": "v1"}, {"key": "k2", "value": "v2"}]},
])
def test_flatten_params_agrees_with_cs_transform(params):
    reference = dict(params)
    transform(reference)
    assert flatten_params(params) == reference


def test_signed_params_version_3_carries_expiry():
    client = CloudStackClient(ENDPOINT, "K", SECRET)
    params = client.signed_params("listZones", {"name": "z1"})
    assert params["signatureVersion"] == "3"
    expires = datetime.datetime.strptime(params["expires"], "%Y-%m-%dT%H:%M:%S%z")
    assert expires > datetime.datetime.now(datetime.timezone.utc)
    unsigned = dict(params)
    signature = unsigned.pop("signature")
    assert sign(unsigned, SECRET) == signature
    assert params["command"] == "listZones" and params["response"] == "json" and params["apiKey"] == "K"


def test_signed_params_version_1_has_no_expiry():
    params = CloudStackClient(ENDPOINT, "K", SECRET, signature_version=1).signed_params("listZones", {})
    assert "expires" not in params and "signatureVersion" not in params


def test_expires_format():
    now = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    assert expires_at(600, now) == "2024-05-01T12:10:00+0000"


def test_error_answer_carries_codes():
    client = CloudStackClient(ENDPOINT, "K", SECRET)
    body = b'{"createzoneresponse": {"uuidList": [], "errorcode": 431, "cserrorcode": 4350, "errortext": "dup"}}'
    with pytest.raises(CloudStackError) as caught:
        client._unwrap("createZone", 431, "application/json", body)
    assert str(caught.value) == "createZone failed: dup"
    assert caught.value.details() == {"command": "createZone", "errorcode": 431, "cserrorcode": 4350,
                                      "errortext": "dup"}


def test_auth_error_without_cserrorcode():
    body = b'{"listzonesresponse": {"uuidList": [], "errorcode": 401, "errortext": "unable to verify"}}'
    with pytest.raises(CloudStackError) as caught:
        CloudStackClient(ENDPOINT, "K", SECRET)._unwrap("listZones", 401, "application/json", body)
    assert caught.value.errorcode == 401 and caught.value.cserrorcode is None


def test_single_response_key_is_unwrapped():
    body = b'{"listzonesresponse": {"count": 1, "zone": [{"name": "z1"}]}}'
    value = CloudStackClient(ENDPOINT, "K", SECRET)._unwrap("listZones", 200, "application/json", body)
    assert value == {"count": 1, "zone": [{"name": "z1"}]}


def test_non_json_answer_names_the_url():
    with pytest.raises(CloudStackError, match="http://127.0.0.1:8080/client/api answered HTTP 404"):
        CloudStackClient(ENDPOINT, "K", SECRET)._unwrap("listZones", 404, "text/html", b"<html>")


def test_unreachable_api_names_the_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = "http://127.0.0.1:%d/client/api" % port
    with pytest.raises(CloudStackError, match="cannot reach the CloudStack API at %s" % url):
        CloudStackClient(url, "K", SECRET, timeout=5).request("listZones")


class ScriptedClient(CloudStackClient):
    """Answers request() from a list, recording what was asked; for polling logic only."""

    def __init__(self, answers):
        super().__init__(ENDPOINT, "K", SECRET, poll_interval=0)
        self.answers = list(answers)
        self.asked = []

    def request(self, command, **params):
        self.asked.append((command, params))
        return self.answers.pop(0)


def test_job_is_polled_until_done():
    client = ScriptedClient([
        {"jobid": "j1"},
        {"jobid": "j1", "jobstatus": 0},
        {"jobid": "j1", "jobstatus": 1, "jobresultcode": 0, "jobresult": {"host": {"id": "h1"}}},
    ])
    assert client.run("prepareHostForMaintenance", 60, id="h1") == {"host": {"id": "h1"}}
    assert [call[0] for call in client.asked] == [
        "prepareHostForMaintenance", "queryAsyncJobResult", "queryAsyncJobResult"]
    assert client.asked[1][1] == {"jobid": "j1"}


def test_failed_job_raises_the_job_errortext():
    client = ScriptedClient([
        {"jobid": "j2"},
        {"jobid": "j2", "jobstatus": 2, "jobresultcode": 530,
         "jobresult": {"errorcode": 530, "errortext": "Host is already in state Maintenance."}},
    ])
    with pytest.raises(CloudStackError) as caught:
        client.run("prepareHostForMaintenance", 60, id="h1")
    assert str(caught.value) == "prepareHostForMaintenance failed: Host is already in state Maintenance."
    assert caught.value.errorcode == 530


def test_job_wait_is_bounded():
    client = ScriptedClient([{"jobid": "j3"}, {"jobid": "j3", "jobstatus": 0}])
    with pytest.raises(CloudStackError, match="job j3 did not finish within 0 seconds"):
        client.run("enableStorageMaintenance", 0, id="p1")


def test_synchronous_answer_is_returned_as_is():
    client = ScriptedClient([{"zone": {"id": "z"}}])
    assert client.run("createZone", 60, name="z") == {"zone": {"id": "z"}}


def test_list_fetches_pages_until_count():
    page = [{"id": str(n)} for n in range(500)]
    client = ScriptedClient([{"count": 501, "host": page}, {"count": 501, "host": [{"id": "last"}]}])
    assert len(client.list("listHosts", "host", zoneid="z")) == 501
    assert [call[1]["page"] for call in client.asked] == [1, 2]


def test_empty_list_answer():
    assert ScriptedClient([{}]).list("listZones", "zone") == []


def test_config_file_fills_missing_settings(tmp_path):
    ini = tmp_path / "cloudstack.ini"
    ini.write_text("[cloudstack]\nendpoint = http://127.0.0.1:9/client/api\nkey = k1\nsecret = s1\ntimeout = 30\n"
                   "[other]\nendpoint = http://127.0.0.2/client/api\nkey = k2\nsecret = s2\n")
    settings = resolve_connection({"api_config_file": str(ini), "api_key": "explicit"})
    assert settings == {"endpoint": "http://127.0.0.1:9/client/api", "key": "explicit", "secret": "s1",
                        "timeout": 30, "method": "get", "verify": None, "validate_certs": True}
    assert read_config_file(str(ini), "other")["key"] == "k2"


def test_config_file_without_region(tmp_path):
    ini = tmp_path / "cloudstack.ini"
    ini.write_text("[cloudstack]\nendpoint = x\n")
    with pytest.raises(CloudStackError, match=r"has no \[lab\] section"):
        resolve_connection({"api_config_file": str(ini), "api_region": "lab"})


def test_missing_settings_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CloudStackError, match="missing CloudStack connection settings: api_key, api_secret"):
        resolve_connection({"api_url": ENDPOINT})


def test_bad_method_is_refused():
    with pytest.raises(CloudStackError, match="api_http_method must be get or post"):
        resolve_connection({"api_url": ENDPOINT, "api_key": "k", "api_secret": "s", "api_http_method": "PUT"})
