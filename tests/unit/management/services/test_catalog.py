"""Built-in offerings and templates, and the offering rules, on a real (SQLite) database."""

import pytest
from sqlalchemy import select

from stackwright.management.errors import InvalidParameterValue
from stackwright.management.persistence.models import ServiceOffering, Template, utcnow
from stackwright.management.services import catalog


def names(ctx, model):
    return sorted(ctx.session.execute(select(model.name).where(model.removed.is_(None))).scalars())


def test_seed_is_idempotent_and_respects_deletions(ctx):
    first = catalog.seed(ctx.session)
    assert {"Small Instance", "Medium Instance", "Blank disk (no OS)"} <= set(first)
    assert catalog.seed(ctx.session) == []
    assert names(ctx, ServiceOffering).count("Small Instance") == 1
    small = ctx.session.execute(select(ServiceOffering).where(ServiceOffering.name == "Small Instance")).scalar_one()
    assert (small.cpu_number, small.cpu_speed, small.memory_mb, small.is_customized) == (1, 500, 512, False)
    blank = ctx.session.execute(select(Template).where(Template.name == "Blank disk (no OS)")).scalar_one()
    assert (blank.format, blank.hypervisor, blank.size_bytes, blank.is_ready) == ("QCOW2", "KVM", 1 << 30, True)
    small.removed = utcnow()
    assert catalog.seed(ctx.session) == []
    assert "Small Instance" not in names(ctx, ServiceOffering)


def test_offering_sizes_come_all_or_none(ctx):
    service = catalog.CatalogService(ctx)
    custom = service.create_offering(name="custom")
    assert custom.is_customized and custom.display_text == "custom"
    with pytest.raises(InvalidParameterValue):
        service.create_offering(name="half", cpu_number=1, memory=64)
    sized = service.create_offering(name="sized", cpu_number=2, cpu_speed=100, memory=32, host_tags=["a", "a", "b"],
                                    storage_type="SHARED")
    assert (sized.host_tags, sized.storage_type) == ("a,b", "shared")


def test_local_storage_offerings_are_refused(ctx):
    service = catalog.CatalogService(ctx)
    for create in (lambda: service.create_offering(name="local", cpu_number=1, cpu_speed=100, memory=64,
                                                   storage_type="Local"),
                   lambda: service.create_disk_offering(name="local", disk_size_gb=5, storage_type="local")):
        with pytest.raises(InvalidParameterValue, match="storagetype local is not supported"):
            create()


def test_template_filters(ctx):
    catalog.seed(ctx.session)
    service = catalog.CatalogService(ctx)

    def listed(flt):
        return {t.name for t in ctx.session.execute(service.templates(flt)).scalars()}

    assert "Blank disk (no OS)" in listed("featured") & listed("executable") & listed("all")
    assert listed("self") == listed("sharedexecutable") == set()
    assert "Blank disk (no OS)" not in listed("community")
    with pytest.raises(InvalidParameterValue):
        service.templates("everything")
