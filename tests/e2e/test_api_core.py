"""The API envelope, authentication, jobs and durability, against a live engine."""

import base64
import datetime as dt
import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from cs import CloudStack, CloudStackApiException


def raw_call(engine, params, secret=None, method="GET", sign=True, encode=None):
    """Send a request signed by hand; returns (status, body)."""
    params = dict(params, response="json")
    if sign:
        params["apiKey"] = engine.api_key
        secret = secret or engine.api_secret
        encode = encode or (lambda v: urllib.parse.quote(v, safe="*"))
        query = "&".join("%s=%s" % (k, encode(v)) for k, v in sorted(params.items())).lower()
        digest = hmac.new(secret.encode(), query.encode(), hashlib.sha1).digest()
        params["signature"] = base64.b64encode(digest).decode()
    data = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    if method == "GET":
        req = urllib.request.Request(engine.endpoint + "?" + data)
    else:
        req = urllib.request.Request(engine.endpoint, data=data.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def expires_in(seconds):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%S+0000")


def test_empty_list_is_an_empty_object(engine):
    status, body, headers = raw_call(engine, {"command": "listZones", "name": "no-such-zone"})
    assert status == 200
    assert body == {"listzonesresponse": {}}
    assert headers["Content-Type"].startswith("application/json")


def test_create_zone_fidelity(api, unique):
    zone = api.createZone(name="z-" + unique, dns1="8.8.8.8", networktype="Basic")["zone"]
    assert zone["allocationstate"] == "Disabled"
    assert zone["securitygroupsenabled"] is True
    assert zone["localstorageenabled"] is False
    assert zone["dhcpprovider"] == "VirtualRouter"
    assert zone["networktype"] == "Basic"
    assert zone["zonetoken"]
    assert zone["tags"] == []
    assert "null" not in json.dumps(zone)
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="z-" + unique, dns1="8.8.8.8", networktype="Basic")
    assert e.value.response.status_code == 431
    assert e.value.error == {
        "uuidList": [], "errorcode": 431, "cserrorcode": 4350,
        "errortext": "A zone with that name already exists. Please specify a unique zone name.",
    }


def test_missing_parameter(api, unique):
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="z2-" + unique, networktype="Basic")
    assert e.value.error["cserrorcode"] == 9999
    assert e.value.error["errortext"] == "Unable to execute API command createzone due to missing parameter dns1"


def test_bad_signature_is_401_without_cserrorcode(engine):
    params = {"command": "listZones", "response": "json", "apiKey": engine.api_key}
    query = "&".join("%s=%s" % (k, urllib.parse.quote(v, safe="*")) for k, v in sorted(params.items())).lower()
    sig = base64.b64encode(hmac.new(engine.api_secret.encode(), query.encode(), hashlib.sha1).digest()).decode()
    tampered = ("A" if sig[0] != "A" else "B") + sig[1:]
    url = engine.endpoint + "?" + urllib.parse.urlencode(dict(params, signature=tampered))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=30)
    assert e.value.code == 401
    assert json.loads(e.value.read()) == {"listzonesresponse": {
        "uuidList": [], "errorcode": 401,
        "errortext": "unable to verify user credentials and/or request signature"}}


def test_wrong_secret_unknown_key_and_unsigned_are_refused(engine):
    status, body, _headers = raw_call(engine, {"command": "listZones"}, secret="not-the-secret")
    assert status == 401
    status, body, _headers = raw_call(engine, {"command": "listZones"}, sign=False)
    assert status == 401 and body["listzonesresponse"]["errorcode"] == 401
    fake = CloudStack(endpoint=engine.endpoint, key="nokey", secret="nosecret")
    with pytest.raises(CloudStackApiException) as e:
        fake.listZones()
    assert e.value.response.status_code == 401


def test_unknown_command_is_401_errorresponse(engine):
    status, body, _headers = raw_call(engine, {"command": "noSuchCommand"})
    assert status == 401
    assert body == {"errorresponse": {
        "uuidList": [], "errorcode": 401,
        "errortext": "unable to verify user credentials and/or request signature"}}


def test_command_names_are_case_sensitive(engine):
    status, body, _headers = raw_call(engine, {"command": "listzones"})
    assert status == 401 and "errorresponse" in body


def test_signature_version_3_expiry(engine):
    ok, _body, _headers = raw_call(engine, {"command": "listZones", "signatureVersion": "3", "expires": expires_in(300)})
    assert ok == 200
    status, body, _headers = raw_call(engine, {"command": "listZones", "signatureVersion": "3", "expires": expires_in(-5)})
    assert status == 401
    status, _body, _headers = raw_call(engine, {"command": "listZones", "signatureVersion": "3"})
    assert status == 401, "signatureVersion 3 without expires must be refused"
    status, _body, _headers = raw_call(engine, {"command": "listZones", "signatureVersion": "3", "expires": "tomorrow"})
    assert status == 401


@pytest.mark.parametrize("form", [
    "%Y-%m-%dT%H:%M:%S+0000", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f+00:00", "%Y-%m-%dT%H:%M:%SZ+0000",
])
def test_expires_forms(engine, form):
    when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).strftime(form)
    status, _body, _headers = raw_call(engine, {"command": "listZones", "signatureVersion": "3", "expires": when})
    assert status == 200, form


def test_client_encoding_variants_are_accepted(engine):
    params = {"command": "listZones", "keyword": "A b/c*~"}

    def java(value):
        return urllib.parse.quote(value, safe="*").replace("~", "%7E")

    def go(value):
        return urllib.parse.quote(value, safe="~").replace("*", "%2A")

    for encode in (None, java, go):
        status, body, _headers = raw_call(engine, params, encode=encode)
        assert status == 200, body


def test_post_requests(engine, unique):
    status, body, _headers = raw_call(engine, {"command": "createZone", "name": "post-" + unique,
                                               "dns1": "1.1.1.1", "networktype": "Advanced"}, method="POST")
    assert status == 200
    assert body["createzoneresponse"]["zone"]["networktype"] == "Advanced"


def test_cs_signs_with_post_too(engine, unique):
    client = engine.client(method="post")
    zone = client.createZone(name="cspost-" + unique, dns1="1.1.1.1", networktype="basic")["zone"]
    assert zone["networktype"] == "Basic"


def test_unknown_parameters_are_ignored(api, unique):
    zone = api.createZone(name="u-" + unique, dns1="8.8.8.8", networktype="Basic", nosuchparam="x")["zone"]
    updated = api.updateZone(id=zone["id"], networktype="Advanced", internaldns1="10.0.0.1")["zone"]
    assert updated["networktype"] == "Basic"
    assert updated["internaldns1"] == "10.0.0.1"


def test_uuid_parameters(api, engine, unique):
    with pytest.raises(CloudStackApiException) as e:
        api.updateZone(id="6f0e1c1a-0000-4000-8000-000000000000", name="x")
    assert e.value.error["errorcode"] == 431
    assert "Invalid parameter id value=6f0e1c1a-0000-4000-8000-000000000000" in e.value.error["errortext"]
    # A non-UUID on an optional uuid parameter is treated as absent (CloudStack behaviour).
    status, body, _headers = raw_call(engine, {"command": "listZones", "id": "not-a-uuid", "name": "nothing-" + unique})
    assert status == 200 and body == {"listzonesresponse": {}}


def test_string_length_and_control_characters(api):
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="x" * 256, dns1="8.8.8.8", networktype="Basic")
    assert e.value.error["errortext"] == "Value greater than max allowed length 255 for param: name"
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="tab\there", dns1="8.8.8.8", networktype="Basic")
    assert e.value.error["errorcode"] == 431


def test_invalid_values_name_the_parameter(api, unique):
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="d-" + unique, dns1="8.8.8.888", networktype="Basic")
    assert e.value.error["errortext"] == "Please enter a valid IP address for DNS1"
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="d-" + unique, dns1="8.8.8.8", networktype="Flat")
    assert e.value.error["errortext"] == "Invalid zone type; only Advanced and Basic values are supported"
    with pytest.raises(CloudStackApiException) as e:
        api.createZone(name="d-" + unique, dns1="8.8.8.8", networktype="Basic", allocationstate="Sleeping")
    assert e.value.error["errortext"] == "Unable to resolve Allocation State 'Sleeping' to a supported state"
    with pytest.raises(CloudStackApiException) as e:
        api.listZones(page="one", pagesize=10)
    assert e.value.error["errortext"] == "Unable to execute API command listzones due to invalid value one for parameter page"
    assert not api.listZones(name="d-" + unique), "a failed create leaves nothing behind"


def test_paging(api, engine, unique):
    for i in range(3):
        api.createZone(name="pg%d-%s" % (i, unique), dns1="8.8.8.8", networktype="Basic")
    everything = api.listZones(keyword=unique)
    assert everything["count"] == 3
    page = api.listZones(keyword=unique, page=2, pagesize=2)
    assert page["count"] == 3 and len(page["zone"]) == 1
    past = api.listZones(keyword=unique, page=9, pagesize=2)
    assert past == {"count": 3}
    for bad, text in (({"pagesize": 10}, '"page" parameter is required when "pagesize" is specified'),
                      ({"page": 1}, '"pagesize" parameter is required when "page" is specified'),
                      ({"page": 1, "pagesize": 501}, "Page size can't exceed max allowed page size value: 500")):
        # Sent by hand: the cs client adds `page` itself when given `pagesize`.
        status, body, _headers = raw_call(engine, dict({"command": "listZones"}, **{k: str(v) for k, v in bad.items()}))
        assert status == 431
        assert body["listzonesresponse"]["errortext"] == text
        assert body["listzonesresponse"]["cserrorcode"] == 9999
    assert api.listZones(keyword=unique, page=1, pagesize=-1)["count"] == 3
    assert sorted(z["name"] for z in api.listZones(keyword=unique.upper())["zone"]) == [
        "pg%d-%s" % (i, unique) for i in range(3)]


def test_list_apis_is_generated_from_declarations(api):
    apis = {a["name"]: a for a in api.listApis()["api"]}
    assert {"createZone", "listZones", "queryAsyncJobResult", "listApis"} <= set(apis)
    create = apis["createZone"]
    assert isinstance(create["description"], str) and create["description"]
    assert create["isasync"] is False
    params = {p["name"]: p for p in create["params"]}
    assert params["name"]["required"] is True and params["name"]["type"] == "string"
    assert params["dns2"]["required"] is False
    assert apis["createPhysicalNetwork"]["isasync"] is True
    one = api.listApis(name="listZones")
    assert one["count"] == 1 and one["api"][0]["name"] == "listZones"


def test_async_create_and_job_polling(api, unique):
    zone = api.createZone(name="net-" + unique, dns1="8.8.8.8", networktype="Advanced")["zone"]
    started = api.createPhysicalNetwork(name="pn-" + unique, zoneid=zone["id"])
    assert set(started) == {"id", "jobid"}
    result = api.queryAsyncJobResult(jobid=started["jobid"])
    assert result["jobid"] == started["jobid"]
    job = api.queryAsyncJobResult(jobid=started["jobid"])
    for _poll in range(100):
        if job["jobstatus"] != 0:
            break
        import time

        time.sleep(0.1)
        job = api.queryAsyncJobResult(jobid=started["jobid"])
    assert job["jobstatus"] == 1 and job["jobresultcode"] == 0
    assert job["jobresulttype"] == "object"
    assert job["jobinstancetype"] == "PhysicalNetwork" and job["jobinstanceid"] == started["id"]
    assert list(job["jobresult"]) == ["physicalnetwork"]
    assert job["jobresult"]["physicalnetwork"]["state"] == "Disabled"
    assert job["cmd"].endswith("Cmd")
    # The cs library polls the same way real tools do.
    tt = api.addTrafficType(physicalnetworkid=started["id"], traffictype="Management",
                            kvmnetworklabel="cloudbr0", fetch_result=True)
    assert tt["traffictype"]["kvmnetworklabel"] == "cloudbr0"
    jobs = api.listAsyncJobs(listall=True)["asyncjobs"]
    assert started["jobid"] in {j["jobid"] for j in jobs}
    with pytest.raises(CloudStackApiException) as e:
        api.queryAsyncJobResult(jobid="6f0e1c1a-0000-4000-8000-000000000000")
    assert e.value.error["errorcode"] == 431


def test_failed_job_carries_errortext_in_jobresult(api, unique):
    zone = api.createZone(name="fj-" + unique, dns1="8.8.8.8", networktype="Advanced")["zone"]
    net = api.createPhysicalNetwork(name="pn-" + unique, zoneid=zone["id"], fetch_result=True)["physicalnetwork"]
    with pytest.raises(CloudStackApiException) as e:
        api.updatePhysicalNetwork(id=net["id"], state="Sideways", fetch_result=True)
    # cs hands over `jobresult`, where ngine_io and cloudstack-go read the error text too.
    assert e.value.error["errorcode"] == 431
    assert "Sideways" in e.value.error["errortext"]
    job = api.listAsyncJobs(listall=True, keyword="updatePhysicalNetwork")["asyncjobs"]
    failed = [j for j in job if j.get("jobinstanceid") == net["id"]]
    assert failed and failed[0]["jobstatus"] == 2 and failed[0]["jobresultcode"] == 431


def test_user_keys_and_role_denial(api, engine, unique):
    account = api.createAccount(username="u" + unique, password="pw-" + unique, email="u@example.org",
                                firstname="U", lastname="Ser", accounttype=0)["account"]
    user = account["user"][0]
    assert account["accounttype"] == 0 and account["state"] == "enabled"
    keys = api.registerUserKeys(id=user["id"])["userkeys"]
    assert len(keys["apikey"]) == 86 and len(keys["secretkey"]) == 86
    assert api.getUserKeys(id=user["id"])["userkeys"] == keys
    client = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"])
    assert "zone" not in client.listZones() or all(z["allocationstate"] == "Enabled" for z in client.listZones()["zone"])
    with pytest.raises(CloudStackApiException) as e:
        client.createZone(name="nope-" + unique, dns1="8.8.8.8", networktype="Basic")
    assert e.value.response.status_code == 432
    assert e.value.error["errortext"] == (
        "The API [createZone] does not exist or is not available for the account u%s." % unique)
    names = {a["name"] for a in client.listApis()["api"]}
    assert "listZones" in names and "createZone" not in names
    # Rotating the keys revokes the old ones at once.
    api.registerUserKeys(id=user["id"])
    with pytest.raises(CloudStackApiException) as e:
        client.listZones()
    assert e.value.response.status_code == 401


def test_session_login(engine, api, unique):
    api.createAccount(username="s" + unique, password="secret-" + unique, email="s@example.org",
                      firstname="S", lastname="User", accounttype=1)
    status, body, _headers = raw_call(engine, {"command": "login", "username": "s" + unique,
                                               "password": "secret-" + unique}, sign=False)
    assert status == 405
    assert body["loginresponse"]["errortext"] == "Please use HTTP POST to authenticate using this API"
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"command": "login", "username": "s" + unique,
                                   "password": "secret-" + unique, "response": "json"}).encode()
    with opener.open(urllib.request.Request(engine.endpoint, data=form), timeout=30) as r:
        login = json.loads(r.read())["loginresponse"]
    assert login["username"] == "s" + unique and login["sessionkey"]
    assert {c.name for c in jar} >= {"JSESSIONID", "sessionkey"}
    url = engine.endpoint + "?" + urllib.parse.urlencode({"command": "listZones", "response": "json",
                                                          "sessionkey": login["sessionkey"]})
    with opener.open(url, timeout=30) as r:
        assert r.status == 200
    bad = engine.endpoint + "?" + urllib.parse.urlencode({"command": "listZones", "response": "json",
                                                          "sessionkey": "wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(bad, timeout=30)
    assert e.value.code == 401
    wrong = urllib.parse.urlencode({"command": "login", "username": "s" + unique,
                                    "password": "bad", "response": "json"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(engine.endpoint, data=wrong), timeout=30)
    assert e.value.code == 531
    assert "Failed to authenticate user s%s" % unique in json.loads(e.value.read())["loginresponse"]["errortext"]


def test_no_traceback_ever(engine):
    for params in ({"command": "createZone", "name": "\u2603" * 10, "dns1": "x", "networktype": "Basic"},
                   {"command": "listZones", "page": "-1", "pagesize": "5"},
                   {"command": "updateZone", "id": ""},
                   {"command": "listZones", "tags[0].key": "a"}):
        status, body, _headers = raw_call(engine, params)
        text = json.dumps(body)
        assert "Traceback" not in text and "File \"" not in text
        assert len(body) == 1


def test_restart_loses_nothing(fresh_engine, unique):
    api = fresh_engine.client()
    zone = api.createZone(name="keep-" + unique, dns1="8.8.8.8", networktype="Basic")["zone"]
    fresh_engine.restart()
    assert api.listZones(id=zone["id"])["zone"][0]["name"] == "keep-" + unique
    again = api.createZone(name="kill-" + unique, dns1="8.8.8.8", networktype="Basic")["zone"]
    fresh_engine.restart(hard=True)   # SIGKILL right after a committed change
    assert api.listZones(id=again["id"])["count"] == 1
