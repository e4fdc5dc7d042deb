"""Data volumes keep when they were attached; CloudStack's default Support Admin and Support
User roles with their rules; the default Resource Admin role's rules made explicit.

Revision ID: 0015_volumes
Revises: 0014_iam
"""
import datetime as dt
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0015_volumes"
down_revision = "0014_iam"
branch_labels = None
depends_on = None

RESOURCE_ADMIN = 2
SUPPORT_ADMIN, SUPPORT_USER = "Support Admin - Default", "Support User - Default"
# Their ids are whatever the database gives them: custom roles may hold the next ones already.
SUPPORT_ROLES = [
    (SUPPORT_ADMIN, "Admin", "Default support admin role"),
    (SUPPORT_USER, "User", "Default support user role"),
]
# What the read-only roles allow, then what support staff may change: guests' power, volumes,
# ISOs and templates (and, for admins, offerings and maintenance); everything else is denied.
READ_ONLY_ALLOWED = ["list*", "get*", "queryAsyncJobResult"]
SUPPORT_COMMON = """
    startVirtualMachine stopVirtualMachine rebootVirtualMachine startKubernetesCluster stopKubernetesCluster
    createVolume attachVolume detachVolume uploadVolume attachIso detachIso registerTemplate registerIso
""".split()
SUPPORT_ADMIN_ALLOWED = """
    prepareHostForMaintenance cancelHostMaintenance enableStorageMaintenance cancelStorageMaintenance
    createServiceOffering createDiskOffering createNetworkOffering createVPCOffering
""".split() + SUPPORT_COMMON
SUPPORT_USER_ALLOWED = SUPPORT_COMMON + ["getUploadParamsFor*"]
# The commands CloudStack's default Resource Admin role allows, by name (later CloudStack
# releases added getUserKeys, listRoles and createConsoleEndpoint to it); nothing else.
RESOURCE_ADMIN_ALLOWED = """
    activateProject addAccountToProject addHost addIpToNic addLdapConfiguration addNicToVirtualMachine
    addVpnUser archiveEvents assignCertToLoadBalancer assignToGlobalLoadBalancerRule assignToLoadBalancerRule
    assignVirtualMachine associateIpAddress associateLun attachIso attachVolume authorizeSamlSso
    authorizeSecurityGroupEgress authorizeSecurityGroupIngress changeServiceForRouter
    changeServiceForVirtualMachine configureInternalLoadBalancerElement configureOvsElement
    configureVirtualRouterElement copyIso copyTemplate createAccount createAffinityGroup createAutoScalePolicy
    createAutoScaleVmGroup createAutoScaleVmProfile createCondition createDiskOffering createEgressFirewallRule
    createFirewallRule createGlobalLoadBalancerRule createInstanceGroup createInternalLoadBalancerElement
    createIpForwardingRule createLBHealthCheckPolicy createLBStickinessPolicy createLoadBalancer
    createLoadBalancerRule createLunOnFiler createNetwork createNetworkACL createNetworkACLList createOvsElement
    createPool createPortForwardingRule createProject createRemoteAccessVpn createSSHKeyPair createSecurityGroup
    createServiceOffering createSnapshot createSnapshotPolicy createStaticRoute createTags createTemplate
    createUser createVMSnapshot createVPC createVirtualRouterElement createVolume createVolumeOnFiler
    createVpnConnection createVpnCustomerGateway createVpnGateway deleteAccount deleteAccountFromProject
    deleteAffinityGroup deleteAutoScalePolicy deleteAutoScaleVmGroup deleteAutoScaleVmProfile deleteCondition
    deleteDiskOffering deleteEgressFirewallRule deleteEvents deleteFirewallRule deleteGlobalLoadBalancerRule
    deleteHost deleteInstanceGroup deleteIpForwardingRule deleteIso deleteLBHealthCheckPolicy
    deleteLBStickinessPolicy deleteLdapConfiguration deleteLoadBalancer deleteLoadBalancerRule deleteNetwork
    deleteNetworkACL deleteNetworkACLList deletePool deletePortForwardingRule deleteProject
    deleteProjectInvitation deleteRemoteAccessVpn deleteSSHKeyPair deleteSecurityGroup deleteServiceOffering
    deleteSnapshot deleteSnapshotPolicies deleteSslCert deleteStaticRoute deleteTags deleteTemplate deleteUser
    deleteVMSnapshot deleteVPC deleteVolume deleteVpnConnection deleteVpnCustomerGateway deleteVpnGateway
    deployVirtualMachine destroyLunOnFiler destroyRouter destroyVirtualMachine destroyVolumeOnFiler detachIso
    detachVolume disableAccount disableAutoScaleVmGroup disableStaticNat disableUser disassociateIpAddress
    dissociateLun enableAccount enableAutoScaleVmGroup enableStaticNat enableUser expungeVirtualMachine
    extractIso extractTemplate extractVolume getApiLimit getCloudIdentifier getSolidFireAccountId
    getSolidFireVolumeAccessGroupId getSolidFireVolumeIscsiName getSolidFireVolumeSize
    getUploadParamsForTemplate getUploadParamsForVolume getVMPassword getVirtualMachineUserData importLdapUsers
    ldapCreateAccount linkDomainToLdap listAccounts listAffinityGroupTypes listAffinityGroups listAlerts
    listApis listAsyncJobs listAutoScalePolicies listAutoScaleVmGroups listAutoScaleVmProfiles listCapabilities
    listCapacity listClusters listConditions listCounters listDiskOfferings listDomainChildren listDomains
    listEgressFirewallRules listEventTypes listEvents listFirewallRules listGlobalLoadBalancerRules listHostTags
    listHosts listHypervisors listInstanceGroups listInternalLoadBalancerElements listIpForwardingRules
    listIsoPermissions listIsos listLBHealthCheckPolicies listLBStickinessPolicies listLdapConfigurations
    listLdapUsers listLoadBalancerRuleInstances listLoadBalancerRules listLoadBalancers listLunsOnFiler
    listNetworkACLLists listNetworkACLs listNetworkOfferings listNetworks listNics listOsCategories listOsTypes
    listOvsElements listPods listPools listPortForwardingRules listPrivateGateways listProjectAccounts
    listProjectInvitations listProjects listPublicIpAddresses listRegions listRemoteAccessVpns
    listResourceDetails listResourceLimits listRouters listSSHKeyPairs listSamlAuthorization listSecurityGroups
    listServiceOfferings listSnapshotPolicies listSnapshots listSslCerts listStaticRoutes listStoragePools
    listStorageProviders listStorageTags listSystemVms listTags listTemplatePermissions listTemplates
    listUsageRecords listUsers listVMSnapshot listVPCOfferings listVPCs listVirtualMachines
    listVirtualRouterElements listVolumes listVolumesOnFiler listVpnConnections listVpnCustomerGateways
    listVpnGateways listVpnUsers listZones lockAccount lockUser migrateVolume modifyPool queryAsyncJobResult
    quotaBalance quotaIsEnabled quotaStatement quotaSummary quotaTariffList rebootRouter rebootVirtualMachine
    recoverVirtualMachine registerIso registerSSHKeyPair registerTemplate registerUserKeys
    removeCertFromLoadBalancer removeFromGlobalLoadBalancerRule removeFromLoadBalancerRule removeIpFromNic
    removeNicFromVirtualMachine removeVpnUser replaceNetworkACLList resetPasswordForVirtualMachine
    resetSSHKeyForVirtualMachine resetVpnConnection resizeVolume restartNetwork restartVPC restoreVirtualMachine
    revertSnapshot revertToVMSnapshot revokeSecurityGroupEgress revokeSecurityGroupIngress scaleVirtualMachine
    startRouter startVirtualMachine stopRouter stopVirtualMachine suspendProject updateAccount
    updateAutoScalePolicy updateAutoScaleVmGroup updateAutoScaleVmProfile updateDefaultNicForVirtualMachine
    updateDiskOffering updateEgressFirewallRule updateFirewallRule updateGlobalLoadBalancerRule
    updateInstanceGroup updateIpAddress updateIso updateIsoPermissions updateLBHealthCheckPolicy
    updateLBStickinessPolicy updateLoadBalancer updateLoadBalancerRule updateNetwork updateNetworkACLItem
    updateNetworkACLList updatePortForwardingRule updateProject updateProjectInvitation updateRemoteAccessVpn
    updateResourceCount updateResourceLimit updateServiceOffering updateSnapshotPolicy updateTemplate
    updateTemplatePermissions updateUser updateVMAffinityGroup updateVPC updateVirtualMachine updateVmNicIp
    updateVpnConnection updateVpnCustomerGateway updateVpnGateway uploadSslCert uploadVolume getUserKeys
    listRoles createConsoleEndpoint
""".split()


def rules_of(role):
    """The ordered (rule, permission) pairs a default role (its id or name) gets here."""
    allowed = {
        RESOURCE_ADMIN: RESOURCE_ADMIN_ALLOWED,
        SUPPORT_ADMIN: READ_ONLY_ALLOWED + SUPPORT_ADMIN_ALLOWED,
        SUPPORT_USER: READ_ONLY_ALLOWED + SUPPORT_USER_ALLOWED,
    }[role]
    return [(rule, "allow") for rule in allowed] + [("*", "deny")]


def _role_table():
    return sa.table("role", sa.column("id", sa.Integer()), sa.column("uuid", sa.String()),
                    sa.column("created", sa.DateTime()), sa.column("name", sa.String()),
                    sa.column("role_type", sa.String()), sa.column("description", sa.String()),
                    sa.column("is_default", sa.Boolean()), sa.column("version", sa.Integer()))


def _support_role_ids(bind, role):
    """{name: id} of the support roles."""
    rows = bind.execute(sa.select(role.c.name, role.c.id).where(
        role.c.name.in_([SUPPORT_ADMIN, SUPPORT_USER]), role.c.is_default.is_(True))).all()
    return dict(rows)


def upgrade():
    op.add_column("volume", sa.Column("attached", sa.DateTime(), nullable=True))
    role = _role_table()
    permission = sa.table("role_permission", sa.column("uuid", sa.String()), sa.column("role_id", sa.Integer()),
                          sa.column("rule", sa.String()), sa.column("permission", sa.String()),
                          sa.column("description", sa.String()), sa.column("sort_order", sa.Integer()))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    op.bulk_insert(role, [
        {"uuid": str(uuid.uuid4()), "created": now, "name": name, "role_type": kind, "description": text,
         "is_default": True, "version": 1}
        for name, kind, text in SUPPORT_ROLES
    ])
    bind = op.get_bind()
    roles = {role_id: name for name, role_id in _support_role_ids(bind, role).items()}
    # Resource Admin's rules are written only where it has none yet (they cannot be changed).
    has_rules = bind.execute(sa.select(sa.func.count()).select_from(permission)
                             .where(permission.c.role_id == RESOURCE_ADMIN)).scalar_one()
    if not has_rules:
        roles[RESOURCE_ADMIN] = RESOURCE_ADMIN
    op.bulk_insert(permission, [
        {"uuid": str(uuid.uuid4()), "role_id": role_id, "rule": rule, "permission": allowed, "description": None,
         "sort_order": order}
        for role_id, key in roles.items() for order, (rule, allowed) in enumerate(rules_of(key))
    ])
    # A role's cached policy is recompiled when its version moves.
    op.execute(role.update().where(role.c.id == RESOURCE_ADMIN).values(version=role.c.version + 1))


def downgrade():
    permission = sa.table("role_permission", sa.column("role_id", sa.Integer()))
    role = _role_table()
    account = sa.table("account", sa.column("role_id", sa.Integer()))
    ids = _support_role_ids(op.get_bind(), role)
    # Accounts of a support role go back to the default role of its type.
    for name, default in ((SUPPORT_ADMIN, 1), (SUPPORT_USER, 4)):
        if name in ids:
            op.execute(account.update().where(account.c.role_id == ids[name]).values(role_id=default))
    op.execute(permission.delete().where(permission.c.role_id.in_([RESOURCE_ADMIN, *ids.values()])))
    op.execute(role.delete().where(role.c.id.in_(list(ids.values()))))
    op.drop_column("volume", "attached")
