"""SSH key pairs: createSSHKeyPair, registerSSHKeyPair, listSSHKeyPairs, deleteSSHKeyPair.

Each call acts for the caller's account, or (admins) for the account named by account and
domainid. The private key of a created pair is in createSSHKeyPair's answer only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..api.listing import listed
from ..api.params import Boolean, Param, String, Uuid
from ..api.registry import Success, api_command
from ..formatting import compact, date
from ..persistence.models import Account, Domain, SshKeyPair
from ..services.queries import page

if TYPE_CHECKING:
    from types import SimpleNamespace

    from ..api.registry import ListResult
    from ..context import Context

KEYPAIR_FIELDS = (
    ("id", "ID of the ssh keypair"), ("name", "Name of the keypair"),
    ("fingerprint", "Fingerprint of the public key"), ("account", "the owner of the keypair"),
    ("accountid", "the owner id of the keypair"), ("domainid", "the domain id of the keypair owner"),
    ("domain", "the domain name of the keypair owner"), ("domainpath", "path of the domain of the keypair owner"),
)
OWNER_PARAMS = [
    Param("account", String(), description="an optional account for the ssh key. Must be used with domainId."),
    Param("domainid", Uuid(Domain), description="an optional domainId for the ssh key. If the account parameter is "
                                                "used, domainId must also be used."),
    Param("projectid", String(), description="an optional project for the ssh key (projects are not supported)"),
]
PACKAGE = "org.apache.cloudstack.api.command.user.ssh."


def keypair_view(pair: SshKeyPair, account: Account, private_key: str | None = None) -> dict[str, Any]:
    domain = account.domain
    return compact({
        "id": pair.uuid, "name": pair.name, "fingerprint": pair.fingerprint, "privatekey": private_key,
        "account": account.name, "accountid": account.uuid, "domainid": domain.uuid, "domain": domain.name,
        "domainpath": domain.path, "created": date(pair.created),
    })


@api_command("createSSHKeyPair", response="keypair", admin_only=False, cmd_class=PACKAGE + "CreateSSHKeyPairCmd",
             fields=(*KEYPAIR_FIELDS, ("privatekey", "Private key")), params=[
                 Param("name", String(), required=True, description="Name of the keypair"), *OWNER_PARAMS])
def create_ssh_key_pair(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Create a new keypair and returns the private key"""
    owner = ctx.vms.owner(p.account, p.domainid)
    pair, private_key = ctx.ssh_keys.create(owner, p.name)
    return keypair_view(pair, owner, private_key)


@api_command("registerSSHKeyPair", response="keypair", admin_only=False, cmd_class=PACKAGE + "RegisterSSHKeyPairCmd",
             fields=KEYPAIR_FIELDS, params=[
                 Param("name", String(), required=True, description="Name of the keypair"),
                 Param("publickey", String(5120), required=True, description="Public key material of the keypair"),
                 *OWNER_PARAMS])
def register_ssh_key_pair(ctx: Context, p: SimpleNamespace) -> dict[str, Any]:
    """Register a public key in a keypair under a certain name"""
    owner = ctx.vms.owner(p.account, p.domainid)
    return keypair_view(ctx.ssh_keys.register(owner, p.name, p.publickey), owner)


@api_command("deleteSSHKeyPair", admin_only=False, cmd_class=PACKAGE + "DeleteSSHKeyPairCmd", params=[
    Param("name", String(), required=True, description="Name of the keypair"), *OWNER_PARAMS])
def delete_ssh_key_pair(ctx: Context, p: SimpleNamespace) -> Success:
    """Deletes a keypair by name"""
    ctx.ssh_keys.delete(ctx.vms.owner(p.account, p.domainid), p.name)
    return Success()


@api_command("listSSHKeyPairs", response="sshkeypair", admin_only=False, cmd_class=PACKAGE + "ListSSHKeyPairsCmd",
             fields=KEYPAIR_FIELDS, params=[
                 Param("id", Uuid(SshKeyPair), description="the ID of the ssh keypair"),
                 Param("name", String(), description="A key pair name to look for"),
                 Param("fingerprint", String(), description="A public key fingerprint to look for"),
                 *OWNER_PARAMS,
                 Param("listall", Boolean(), description="If set to false, list only resources belonging to the "
                                                         "command's caller"),
                 Param("isrecursive", Boolean(), description="defaults to false"),
             ])
def list_ssh_key_pairs(ctx: Context, p: SimpleNamespace) -> ListResult:
    """List registered keypairs"""
    q = select(SshKeyPair)
    if p.account is not None or not ctx.is_root_admin:
        q = q.where(SshKeyPair.account_id == ctx.vms.owner(p.account, p.domainid).id)
    elif p.domainid is not None:
        q = q.where(SshKeyPair.domain_id == p.domainid.id)
    elif not p.listall and p.id is None:
        q = q.where(SshKeyPair.account_id == ctx.account.id)
    if p.id is not None:
        q = q.where(SshKeyPair.id == p.id.id)
    if p.name:
        q = q.where(func.lower(SshKeyPair.name) == p.name.lower())
    if p.fingerprint:
        q = q.where(func.lower(SshKeyPair.fingerprint) == p.fingerprint.lower())
    if p.keyword:
        q = q.where(func.lower(SshKeyPair.name).contains(p.keyword.lower()))
    return listed(page(ctx, p, q, SshKeyPair.id), lambda pair: keypair_view(pair, ctx.session.get(Account, pair.account_id)))
