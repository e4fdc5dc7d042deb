"""Image stores against a live engine, through the `cs` client (contract §5.6)."""

import uuid

import pytest

from tests.e2e.test_storage_pools import api_error, raw_call


@pytest.fixture(scope="module")
def zone(engine):
    name = "is-zone-%s" % uuid.uuid4().hex[:8]
    return engine.client().createZone(name=name, dns1="8.8.8.8", networktype="Advanced")["zone"]


def add_nfs(api, zone, name, path=None, **extra):
    url = "nfs://nfs-mount.domain/share/%s/" % (path or name)
    return api.addImageStore(provider="NFS", name=name, url=url, zoneid=zone["id"], **extra)["imagestore"]


def test_add_image_store(api, zone, unique):
    """ngine_io's image_store target: url verbatim, provider NFS, protocol nfs, zone name."""
    name = "is-%s" % unique
    status, body = raw_call(api, "addImageStore", provider="NFS", name=name, zoneid=zone["id"],
                            url="nfs://nfs-mount.domain/share/images-%s/" % unique)
    assert status == 200 and list(body) == ["addimagestoreresponse"]
    store = body["addimagestoreresponse"]["imagestore"]
    assert store["name"] == name
    assert store["url"] == "nfs://nfs-mount.domain/share/images-%s/" % unique
    assert store["providername"] == "NFS"
    assert store["protocol"] == "nfs"
    assert store["scope"] == "ZONE"
    assert (store["zoneid"], store["zonename"]) == (zone["id"], zone["name"])
    assert store["readonly"] is False
    listed = api.listImageStores(name=name, zoneid=zone["id"])
    assert listed["count"] == 1 and listed["imagestore"][0] == store


def test_defaults(api, zone, unique):
    url = "NFS://Nfs-Mount.domain/share/default-%s" % unique
    store = api.addImageStore(provider="nfs", url=url, zoneid=zone["id"])["imagestore"]
    assert store["name"] == url            # name defaults to the url
    assert store["url"] == url
    assert store["protocol"] == "nfs"      # lower-case scheme
    assert store["providername"] == "NFS"
    other = api.addImageStore(provider="Tape", name="is-unknown-%s" % unique,
                              url="nfs://10.0.0.1/unknown-%s" % unique)["imagestore"]
    assert other["providername"] == "NFS"  # unknown providers fall back to NFS
    assert other["scope"] == "REGION" and "zoneid" not in other and "zonename" not in other


def test_duplicate_name_and_reuse_after_delete(api, zone, unique):
    name = "is-dup-%s" % unique
    first = add_nfs(api, zone, name)
    status, error = api_error(api.addImageStore, provider="NFS", name=name, zoneid=zone["id"],
                              url="nfs://nfs-mount.domain/share/other-%s" % unique)
    assert (status, error["cserrorcode"]) == (431, 4350)
    assert error["errortext"] == "The image store with name %s already exists, try creating with another name" % name
    status, body = raw_call(api, "deleteImageStore", id=first["id"])
    assert (status, body) == (200, {"deleteimagestoreresponse": {"success": True}})
    assert api.listImageStores(id=first["id"]) == {}
    again = add_nfs(api, zone, name)
    assert again["id"] != first["id"] and again["name"] == name


def test_one_provider_only(api, zone, unique):
    add_nfs(api, zone, "is-nfs-%s" % unique)
    status, error = api_error(api.addImageStore, provider="S3", name="is-s3-%s" % unique,
                              url="https://s3.example.org/bucket-%s" % unique)
    assert status == 431
    assert error["errortext"] == "You can only add new image stores from the same provider NFS already added"
    assert api.listImageStores(name="is-s3-%s" % unique) == {}


@pytest.mark.parametrize("url, text", [
    ("nfs-mount.domain:/share", "uri.scheme is null nfs-mount.domain:/share, add nfs:// (or cifs://) as a prefix"),
    ("nfs://nfs-mount.domain", "Your host and/or path is wrong.  Make sure it's of the format nfs://hostname/path"),
    ("nfs:///share", "Your host and/or path is wrong.  Make sure it's of the format nfs://hostname/path"),
])
def test_bad_nfs_urls(api, zone, unique, url, text):
    status, error = api_error(api.addImageStore, provider="NFS", name="is-bad-%s" % unique, url=url,
                              zoneid=zone["id"])
    assert (status, error["errortext"]) == (431, text)
    assert api.listImageStores(name="is-bad-%s" % unique) == {}


def test_missing_provider(api):
    status, error = api_error(api.addImageStore, url="nfs://10.0.0.1/x")
    assert (status, error["cserrorcode"]) == (431, 9999)
    assert error["errortext"] == "Unable to execute API command addimagestore due to missing parameter provider"


def test_list_filters_paging_and_readonly(api, zone, unique):
    a = add_nfs(api, zone, "is-list-a-%s" % unique)
    b = add_nfs(api, zone, "is-list-b-%s" % unique)

    def ids(res):
        return [s["id"] for s in res.get("imagestore", [])]

    assert ids(api.listImageStores(name="IS-LIST-A-%s" % unique.upper())) == [a["id"]]
    assert ids(api.listImageStores(id=b["id"])) == [b["id"]]
    mine = dict(zoneid=zone["id"], keyword="is-list-")
    assert ids(api.listImageStores(protocol="NFS", provider="nfs", **mine)) == [a["id"], b["id"]]
    assert api.listImageStores(protocol="cifs", **mine) == {}
    page1 = api.listImageStores(page=1, pagesize=1, **mine)
    page2 = api.listImageStores(page=2, pagesize=1, **mine)
    assert page1["count"] == page2["count"] == 2 and ids(page1) + ids(page2) == [a["id"], b["id"]]

    updated = api.updateImageStore(id=b["id"], readonly=True)["imagestore"]
    assert updated["readonly"] is True
    assert ids(api.listImageStores(readonly=True, **mine)) == [b["id"]]
    assert ids(api.listImageStores(readonly=False, **mine)) == [a["id"]]
    status, body = raw_call(api, "listImageStores", name="no-such-store-%s" % unique)
    assert (status, body) == (200, {"listimagestoresresponse": {}})
