"""Image (secondary) stores: addImageStore, updateImageStore, deleteImageStore, listImageStores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.listing import listed
from ..api.params import Boolean, Map, Param, String, Uuid, map_dict
from ..api.registry import Success, api_command
from ..formatting import compact
from ..persistence.models import ImageStore, Zone

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

IMAGE_STORE_FIELDS = (
    ("id", "the ID of the image store"), ("name", "the name of the image store"),
    ("zoneid", "the Zone ID of the image store"), ("zonename", "the Zone name of the image store"),
    ("url", "the url of the image store"), ("protocol", "the protocol of the image store"),
    ("providername", "the provider name of the image store"), ("scope", "the scope of the image store"),
    ("readonly", "defines if store is read-only", "boolean"),
    ("disksizetotal", "the total disk size of the host", "long"),
    ("disksizeused", "the host's currently used disk size", "long"),
)


def image_store_view(ctx: Context, store: ImageStore) -> dict[str, Any]:
    zone = ctx.storage.zone_of(store)
    return compact({
        "id": store.uuid,
        "name": store.name,
        "zoneid": zone.uuid if zone else None,
        "zonename": zone.name if zone else None,
        "url": store.url,
        "protocol": store.protocol,
        "providername": store.provider,
        "scope": store.scope,
        "readonly": store.readonly,
        "disksizetotal": store.total_bytes,
        "disksizeused": store.used_bytes,
        "hasannotations": False,
    })


@api_command("addImageStore", response="imagestore", fields=IMAGE_STORE_FIELDS, params=[
    Param("provider", String(), required=True, description="the image store provider name"),
    Param("name", String(), description="the name for the image store"),
    Param("url", String(2048), description="the URL for the image store"),
    Param("zoneid", Uuid(Zone), description="the Zone ID for the image store"),
    Param("details", Map(), description="the details for the image store. Example: details[0].key=accesskey&details[0].value=s389ddssaa"),
])
def add_image_store(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Adds backup image store."""
    store = ctx.storage.add_image_store(
        provider=p.provider, name=p.name, url=p.url, zone=p.zoneid, details=map_dict(p.details))
    return image_store_view(ctx, store)


@api_command("updateImageStore", response="imagestore", fields=IMAGE_STORE_FIELDS, since="4.15.0", params=[
    Param("id", Uuid(ImageStore), required=True, description="Image Store UUID"),
    Param("readonly", Boolean(), description="If set to true, it designates the corresponding image store to read-only, "
                                             "hence not considering them during storage migration"),
    Param("name", String(), description="The new name for the Image Store."),
])
def update_image_store(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Updates image store read-only status."""
    store = ctx.storage.update_image_store(p.id, readonly=p.readonly, name=p.name)
    return image_store_view(ctx, store)


@api_command("deleteImageStore", params=[
    Param("id", Uuid(ImageStore), required=True, description="The image store ID or Secondary Storage ID."),
])
def delete_image_store(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes an image store or Secondary Storage."""
    ctx.storage.delete_image_store(p.id)
    return Success()


@api_command("listImageStores", response="imagestore", fields=IMAGE_STORE_FIELDS, params=[
    Param("id", Uuid(ImageStore), description="the ID of the storage pool"),
    Param("name", String(), description="the name of the image store"),
    Param("zoneid", Uuid(Zone), description="the Zone ID for the image store"),
    Param("protocol", String(), description="the image store protocol"),
    Param("provider", String(), description="the image store provider"),
    Param("readonly", Boolean(), description="read-only status of the image store"),
])
def list_image_stores(ctx: Context, p: SimpleNamespace) -> ListResult:
    """Lists image stores."""
    return listed(ctx.storage.list_image_stores(p), lambda store: image_store_view(ctx, store))
