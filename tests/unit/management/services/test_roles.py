"""Dynamic roles: rule syntax, wildcard matching, evaluation order and the compiled policy cache."""

from types import SimpleNamespace

import pytest

from stackwright.management.api.authorize import RoleCache
from stackwright.management.errors import InvalidParameterValue
from stackwright.management.persistence.models import Role
from stackwright.management.services.roles import RoleService, checked_rule, compile_policy, rule_matcher

COMMANDS = {"listZones": frozenset({"Admin", "User"}), "listHosts": frozenset({"Admin"}),
            "createZone": frozenset({"Admin"}), "deployVirtualMachine": frozenset({"Admin", "User"})}


def role(role_id=10, kind="User", version=1):
    return SimpleNamespace(id=role_id, role_type=kind, version=version)


def test_wildcards_match_whole_names_without_regard_to_case():
    assert rule_matcher("list*").fullmatch("listZones")
    assert rule_matcher("LIST*").fullmatch("listZones")
    assert not rule_matcher("list*").fullmatch("createZone")
    assert rule_matcher("*Zone*").fullmatch("createZone")
    assert not rule_matcher("listZone").fullmatch("listZones")


@pytest.mark.parametrize("rule, text", [
    ("frobnicate", "Invalid rule provided: frobnicate is not an API command"),
    ("zz*", "Invalid rule provided: the wildcard zz* matches no API command"),
    ("list-*", "Only API names and wildcards are allowed, invalid rule provided: list-*"),
    ("", "Only API names and wildcards are allowed, invalid rule provided: "),
])
def test_unknown_rules_are_refused(rule, text):
    with pytest.raises(InvalidParameterValue) as e:
        checked_rule(rule, COMMANDS)
    assert e.value.text == text


def test_known_rules_pass():
    assert checked_rule("listZones", COMMANDS) == "listZones"
    assert checked_rule("*", COMMANDS) == "*"
    assert checked_rule("deploy*", COMMANDS) == "deploy*"


def test_first_matching_rule_wins_else_the_declared_types():
    policy = compile_policy(role(), [("listZones", "deny"), ("list*", "allow")], COMMANDS)
    assert not policy.allows("listZones")       # the first rule, before the wildcard
    assert policy.allows("listHosts")           # the wildcard, beyond the User type's commands
    assert policy.allows("deployVirtualMachine")    # no rule: the command is declared for User
    assert not policy.allows("createZone")      # no rule: declared for Admin only
    read_only = compile_policy(role(), [("list*", "allow"), ("*", "deny")], COMMANDS)
    assert read_only.allowed == {"listZones", "listHosts"}


def test_root_admin_is_allowed_everything():
    policy = compile_policy(role(role_id=1, kind="Admin"), [("*", "deny")], COMMANDS)
    assert policy.allowed is None and policy.allows("anything")


def test_rule_changes_bump_the_version_and_the_cache_follows(ctx):
    roles = RoleService(ctx)
    custom = roles.create("cached", "User", None)
    cache = RoleCache()
    first = cache.policy(ctx.session, custom.id)
    assert first.version == 1 and cache.policy(ctx.session, custom.id) is first
    roles.add_rule(custom, "listZones", "deny", None)
    assert custom.version == 2
    # Within TTL the cached policy stands until invalidated; then the new version is compiled.
    assert cache.policy(ctx.session, custom.id) is first
    cache.invalidate()
    second = cache.policy(ctx.session, custom.id)
    assert second.version == 2 and not second.allows("listZones")


def test_an_invalidation_during_a_compile_is_not_lost(ctx):
    custom = RoleService(ctx).create("raced", "User", None)
    cache = RoleCache()
    real_execute = ctx.session.execute

    def execute_then_invalidate(*args, **kwargs):
        result = real_execute(*args, **kwargs)
        cache.invalidate()          # another request commits a change while this one compiles
        return result

    ctx.session.execute = execute_then_invalidate
    try:
        cache.policy(ctx.session, custom.id)
    finally:
        ctx.session.execute = real_execute
    assert cache.fresh(custom.id) is None


def test_default_roles_cannot_change_and_used_roles_stay(ctx):
    from stackwright.management.errors import PermissionDenied

    roles = RoleService(ctx)
    user_role = ctx.session.get(Role, 4)
    assert user_role.is_default and user_role.name == "User"
    with pytest.raises(PermissionDenied):
        roles.delete(user_role)
    with pytest.raises(PermissionDenied):
        roles.add_rule(user_role, "listZones", "allow", None)
    custom = roles.create("in use", "User", None)
    ctx.account.role_id = custom.id
    ctx.session.flush()
    with pytest.raises(PermissionDenied):
        roles.delete(custom)
