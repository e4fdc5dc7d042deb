"""Answers of cacheable list commands are reused only while nothing has changed, and a
stored answer never lets a request skip authentication or see another caller's view."""

import pytest
from cs import CloudStack, CloudStackApiException

from tests.e2e.test_api_core import expires_in, raw_call
from tests.support.hierarchy import new_cluster, new_pod, new_zone
from tests.support.jobs import run_job


def zone_names(client, **params):
    return {z["name"] for z in client.listZones(**params).get("zone", [])}


def test_a_change_is_seen_by_the_next_request(api, unique):
    before = zone_names(api)
    assert zone_names(api) == before  # the second answer may come from the cache
    zone = new_zone(api, unique)
    assert zone_names(api) == before | {zone["name"]}
    api.updateZone(id=zone["id"], name="renamed-" + unique)
    assert zone_names(api) == before | {"renamed-" + unique}
    api.deleteZone(id=zone["id"])
    assert zone_names(api) == before


def test_a_job_result_is_seen_by_the_next_request(api, unique):
    pod = new_pod(api, new_zone(api, unique), unique)
    cluster = new_cluster(api, pod, unique)
    host = api.addHost(zoneid=pod["zoneid"], podid=pod["id"], clusterid=cluster["id"], hypervisor="Simulator",
                       url="http://sim/%s/h1" % unique, username="root", password="password")["host"][0]
    assert api.listHosts(id=host["id"])["host"][0]["resourcestate"] == "Enabled"
    assert run_job(api, "prepareHostForMaintenance", id=host["id"])[1]["jobstatus"] == 1
    assert api.listHosts(id=host["id"])["host"][0]["resourcestate"] == "Maintenance"
    assert run_job(api, "cancelHostMaintenance", id=host["id"])[1]["jobstatus"] == 1
    assert api.listHosts(id=host["id"])["host"][0]["resourcestate"] == "Enabled"


def test_a_stored_answer_still_needs_a_valid_request(engine):
    for _attempt in range(3):
        assert raw_call(engine, {"command": "listZones"})[0] == 200
    assert raw_call(engine, {"command": "listZones"}, secret="not-the-secret")[0] == 401
    assert raw_call(engine, {"command": "listZones"}, sign=False)[0] == 401
    expired = {"command": "listZones", "signatureVersion": "3", "expires": expires_in(-60)}
    assert raw_call(engine, expired)[0] == 401


def test_answers_are_per_caller(api, engine, unique):
    account = api.createAccount(username="c" + unique, password="pw-" + unique, email="c@example.org",
                                firstname="C", lastname="Aller", accounttype=0)["account"]
    keys = api.registerUserKeys(id=account["user"][0]["id"])["userkeys"]
    user = CloudStack(endpoint=engine.endpoint, key=keys["apikey"], secret=keys["secretkey"])
    hidden = new_zone(api, unique, allocationstate="Disabled")
    for _attempt in range(2):
        assert hidden["name"] in zone_names(api)
        assert hidden["name"] not in zone_names(user)
    with pytest.raises(CloudStackApiException) as caught:
        user.listHosts()
    assert caught.value.response.status_code == 432
    # Rotated keys are refused even for an answer the old key had stored.
    api.registerUserKeys(id=account["user"][0]["id"])
    with pytest.raises(CloudStackApiException) as caught:
        user.listZones()
    assert caught.value.response.status_code == 401
