"""Who counts as an Airflow admin: the simple auth manager's roles from Airflow's configuration, fail closed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeloop.airflow_users import (
    SIMPLE_AUTH_MANAGER,
    is_admin,
    is_admin_user,
    known_user_names,
    roles_from_setting,
)

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def test_the_simple_auth_managers_setting_gives_each_user_a_role() -> None:
    roles = roles_from_setting(SIMPLE_AUTH_MANAGER, "admin:admin, viewer:viewer,ops:OP:team-a")
    assert roles == {"admin": "admin", "viewer": "viewer", "ops": "op"}
    assert roles_from_setting(FAB, "admin:admin") is None


def test_only_a_configured_admin_is_an_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH_MANAGER)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer,root:user")
    assert is_admin("admin")
    assert not is_admin("viewer")
    assert not is_admin("root"), "a name is not a role"
    assert not is_admin("mallory") and not is_admin(None) and not is_admin("")
    assert known_user_names() == {"admin", "viewer", "root"}


def test_with_an_auth_manager_that_keeps_users_in_its_database_nobody_is_an_admin_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", FAB)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    assert not is_admin("admin")
    assert known_user_names() is None


@pytest.mark.parametrize(
    ("user", "admin"),
    [
        (SimpleNamespace(role="admin"), True),
        (SimpleNamespace(role="ADMIN"), True),
        (SimpleNamespace(role="op"), False),
        (SimpleNamespace(role=None, roles=[SimpleNamespace(name="Admin")]), True),  # FAB: a list of roles
        (SimpleNamespace(roles=[SimpleNamespace(name="User"), SimpleNamespace(name="Op")]), False),
        (SimpleNamespace(), False),
    ],
)
def test_a_logged_in_user_is_judged_by_its_own_role(user: object, admin: bool) -> None:
    assert is_admin_user(user) is admin
