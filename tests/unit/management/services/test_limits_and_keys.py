"""Resource limits and counts, SSH key pairs and user data, on a real SQLite database."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization

from stackwright.management.errors import InvalidParameterValue, PermissionDenied, ResourceAllocationError
from stackwright.management.persistence.models import Account, Domain, ServiceOffering, Template
from stackwright.management.services import vm_lifecycle
from stackwright.management.services.placement import GiB
from stackwright.management.services.resource_limits import BY_NAME, resource_type
from stackwright.management.services.ssh_keys import fingerprint, generate_key_pair, parse_public_key

USER_VM, CPU, MEMORY, VOLUME, PRIMARY = (BY_NAME[n] for n in ("user_vm", "cpu", "memory", "volume", "primary_storage"))


@pytest.fixture
def tenant(ctx, zone_pod):
    """A user account in a child domain of ROOT, and what a deployment needs."""
    session = ctx.session
    root = ctx.account.domain
    child = Domain(name="child", path="ROOT/child", level=1, parent_id=root.id)
    session.add(child)
    session.flush()
    account = Account(name="alice", account_type=0, domain_id=child.id)
    offering = ServiceOffering(name="small", cpu_number=2, cpu_speed=500, memory_mb=1024)
    template = Template(name="t", format="QCOW2", hypervisor="Simulator", is_ready=True, size_bytes=GiB)
    session.add_all([account, offering, template])
    session.flush()
    return account, child, zone_pod[0], offering, template


def deploy(ctx, tenant, **kw):
    account, _child, zone, offering, template = tenant
    return ctx.vms.create(zone=zone, offering=offering, template=template, owner=account, **kw)


def test_deploy_counts_for_the_account_and_each_domain(ctx, tenant):
    account, child, *_unused = tenant
    vm = deploy(ctx, tenant)
    limits = ctx.limits
    for owner in ({"account": account}, {"domain": child}, {"domain": ctx.account.domain}):
        counts = {t.name: limits.count(t, **owner) for t in (USER_VM, CPU, MEMORY, VOLUME, PRIMARY)}
        assert counts == {"user_vm": 1, "cpu": 2, "memory": 1024, "volume": 1, "primary_storage": GiB}, owner
    # Destroyed: the guest no longer counts, its root volume does until it is expunged.
    vm_lifecycle._destroyed(ctx, vm.id)
    vm_lifecycle._destroyed(ctx, vm.id)
    assert (limits.count(USER_VM, account=account), limits.count(CPU, domain=child)) == (0, 0)
    assert limits.count(VOLUME, account=account) == 1
    vm_lifecycle._expunged(ctx, vm.id)
    assert (limits.count(VOLUME, account=account), limits.count(PRIMARY, domain=child)) == (0, 0)
    assert [value for _t, value in limits.recount([USER_VM, VOLUME], account=account)] == [0, 0]


def test_account_limit_refuses_the_deploy_with_535(ctx, tenant):
    account, *_unused = tenant
    ctx.limits.set_limit(USER_VM, 1, account=account)
    deploy(ctx, tenant)
    with pytest.raises(ResourceAllocationError) as info:
        deploy(ctx, tenant)
    assert info.value.errorcode == 535
    assert info.value.text.startswith("Maximum amount of resources of Type = 'user_vm' for alice in Domain Id = ")
    assert "Account Resource Limit = 1, Current Account Resource Amount = 1, Requested Resource Amount = 1." in \
        info.value.text
    assert ctx.limits.count(USER_VM, account=account) == 1


def test_domain_limit_bounds_its_accounts_and_defaults_come_from_settings(ctx, tenant):
    account, child, *_unused = tenant
    assert ctx.limits.account_limit(account, CPU) == 40           # max.account.cpus
    assert ctx.limits.domain_limit(child, MEMORY) == 81920        # max.domain.memory
    assert ctx.limits.domain_limit(ctx.account.domain, CPU) == -1  # ROOT is never limited
    ctx.settings.set_global("max.account.memory", "1536")
    assert ctx.limits.account_limit(account, MEMORY) == 1536
    ctx.limits.set_limit(CPU, 3, domain=child)
    deploy(ctx, tenant)
    with pytest.raises(ResourceAllocationError) as info:
        deploy(ctx, tenant)
    assert "domain resource limits of Type 'cpu'" in info.value.text
    assert "Domain Resource Limit = 3, Current Domain Resource Amount = 2, Requested Resource Amount = 2." in \
        info.value.text
    ctx.settings.reset("max.account.memory")
    assert ctx.limits.account_limit(account, MEMORY) == 40960


def test_limit_rules(ctx, tenant):
    account, child, *_unused = tenant
    deploy(ctx, tenant)
    with pytest.raises(InvalidParameterValue, match="below its current usage of 2; release resources first"):
        ctx.limits.set_limit(CPU, 1, account=account)
    with pytest.raises(InvalidParameterValue, match="at least '0'"):
        ctx.limits.set_limit(CPU, -2, account=account)
    ctx.limits.set_limit(PRIMARY, 5, domain=child)
    with pytest.raises(InvalidParameterValue, match="has maximum allowed resource limit 5 for primary_storage"):
        ctx.limits.set_limit(PRIMARY, 6, account=account)
    assert ctx.limits.set_limit(PRIMARY, 5, account=account) == 5
    assert ctx.limits.set_limit(PRIMARY, None, account=account) == -1
    with pytest.raises(PermissionDenied, match="ROOT domain"):
        ctx.limits.set_limit(CPU, 5, domain=ctx.account.domain)
    with pytest.raises(InvalidParameterValue, match="root admin"):
        ctx.limits.set_limit(CPU, 5, account=ctx.account)
    with pytest.raises(InvalidParameterValue, match="12 is not one of"):
        resource_type(12)
    assert resource_type(name="Primary_Storage") is PRIMARY


def test_ssh_key_pairs(ctx, tenant):
    account, *_unused = tenant
    pair, private = ctx.ssh_keys.create(account, "k1")
    key = serialization.load_pem_private_key(private.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert pair.public_key == public.decode()
    assert pair.fingerprint == fingerprint(base64.b64decode(public.split()[1]))
    assert len(pair.fingerprint) == 47 and private not in pair.public_key
    other, _print, _private = generate_key_pair()
    registered = ctx.ssh_keys.register(account, "k2", other + " someone@example")
    assert registered.public_key == other
    with pytest.raises(InvalidParameterValue, match="already exists"):
        ctx.ssh_keys.register(account, "K1", other)
    with pytest.raises(InvalidParameterValue, match="same public key"):
        ctx.ssh_keys.register(account, "k3", other)
    for bad in ("", "ssh-rsa", "ssh-rsa not-base64!", "ssh-rsa " + base64.b64encode(b"junk").decode()):
        with pytest.raises(InvalidParameterValue, match="Public key is invalid"):
            parse_public_key(bad)
    vm = deploy(ctx, tenant, keypairs=["k1", "k2", "k1"], user_data=base64.b64encode(b"#cloud-config\n").decode())
    assert vm.keypairs == "k1,k2" and base64.b64decode(vm.user_data) == b"#cloud-config\n"
    with pytest.raises(InvalidParameterValue, match="'nope' was not found"):
        deploy(ctx, tenant, keypairs=["nope"])
    with pytest.raises(InvalidParameterValue, match="not base64"):
        deploy(ctx, tenant, user_data="***")
    with pytest.raises(InvalidParameterValue, match="User data is too long: 32772 characters"):
        deploy(ctx, tenant, user_data="A" * 32772)
    ctx.ssh_keys.delete(account, "k1")
    with pytest.raises(InvalidParameterValue, match="does not exist"):
        ctx.ssh_keys.delete(account, "k1")
