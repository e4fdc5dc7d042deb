"""Builders and assertions shared by the end-to-end tests of the zone -> pod -> cluster hierarchy.

The engine is shared by every test of a session, so each builder takes the test's
`unique` suffix and names everything after it.
"""

import itertools

import pytest
from cs import CloudStackApiException

_serial = itertools.count(1)


def new_zone(api, unique, networktype="Basic", **params):
    params.setdefault("name", "zone-%s-%d" % (unique, next(_serial)))
    return api.createZone(dns1="8.8.8.8", networktype=networktype, **params)["zone"]


def new_pod(api, zone, unique, subnet="10.100.10", **params):
    """A pod in `zone` with gateway <subnet>.1/24 and a range starting at <subnet>.101."""
    params.setdefault("name", "pod-%s-%d" % (unique, next(_serial)))
    params.setdefault("gateway", subnet + ".1")
    params.setdefault("netmask", "255.255.255.0")
    params.setdefault("startip", subnet + ".101")
    return api.createPod(zoneid=zone["id"], **params)["pod"]


def new_cluster(api, pod, unique, hypervisor="Simulator", **params):
    params.setdefault("clustername", "cluster-%s-%d" % (unique, next(_serial)))
    params.setdefault("clustertype", "CloudManaged")
    answer = api.addCluster(zoneid=pod["zoneid"], podid=pod["id"], hypervisor=hypervisor, **params)
    assert answer["count"] == 1
    return answer["cluster"][0]


def physical_network(api, zone, unique, traffic=("Management",), label="cloudbr0"):
    """A physical network of `zone` carrying `traffic`, each type labelled with the KVM bridge."""
    network = api.createPhysicalNetwork(
        zoneid=zone["id"], name="phy-%s-%d" % (unique, next(_serial)), fetch_result=True,
    )["physicalnetwork"]
    for kind in traffic:
        api.addTrafficType(physicalnetworkid=network["id"], traffictype=kind,
                           kvmnetworklabel=label, fetch_result=True)
    return network


def api_error(call, status, text=None, cserrorcode=None, **params):
    """Call `call(**params)`, expecting CloudStack's error answer; returns the error body."""
    with pytest.raises(CloudStackApiException) as caught:
        call(**params)
    error = caught.value.error
    assert caught.value.response.status_code == status, error
    assert error["errorcode"] == status
    if text is not None:
        assert error["errortext"] == text
    if cserrorcode is not None:
        assert error["cserrorcode"] == cserrorcode
    return error


def call_exactly(api, command, **params):
    """Send exactly `params` (cs adds `pagesize` to any `page`); returns (status, body) unwrapped."""
    kind, request = api._prepare_request(command, **params)
    for added in set(request) - set(params) - {"command", "apiKey", "response", "signatureVersion", "expires"}:
        del request[added]
    response = api._send(kind, request, api.headers, api.timeout)
    body = response.json()
    [inner] = body.values()
    return response.status_code, inner


def invalid_uuid_text(command, name, value):
    return (
        "Unable to execute API command %s due to invalid value. Invalid parameter %s value=%s due to "
        "incorrect long value format, or entity does not exist or due to incorrect parameter "
        "annotation for the field in api cmd class." % (command.lower(), name, value)
    )


def missing_text(command, name):
    return "Unable to execute API command %s due to missing parameter %s" % (command.lower(), name)
