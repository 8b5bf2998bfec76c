"""Who the Airflow users are and which of them are admins, as the deployment's auth manager says.

The simple auth manager (the local stack's) keeps users and roles in Airflow's configuration
(`[core] simple_auth_manager_users`, `name:role` pairs), so they can be read anywhere, a task
included, without a database or a network call. Other auth managers (FAB) keep them in their
own database: there the names are unknown here (None) and no user name counts as an admin,
so whatever needs an admin is refused (fail closed). A logged-in user object (the plugin's
requests) carries its role(s) itself and is judged for any auth manager.
"""

from __future__ import annotations

from typing import Any

ADMIN_ROLE = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def roles_from_setting(auth_manager: str, users_setting: str) -> dict[str, str] | None:
    """`{user name: role}` from the simple auth manager's users setting; None for any other auth manager."""
    if auth_manager.strip() != SIMPLE_AUTH_MANAGER:
        return None
    roles: dict[str, str] = {}
    for entry in users_setting.split(","):
        name, _, rest = entry.strip().partition(":")
        if name:
            roles[name] = rest.partition(":")[0].strip().lower()  # name:role[:teams]
    return roles


def configured_roles() -> dict[str, str] | None:
    """The users and roles of this Airflow deployment when its configuration holds them, else None."""
    try:
        from airflow.configuration import conf
    except ImportError:  # not an Airflow installation: nothing to ask
        return None
    return roles_from_setting(
        conf.get("core", "auth_manager", fallback=SIMPLE_AUTH_MANAGER),
        conf.get("core", "simple_auth_manager_users", fallback=""),
    )


def known_user_names() -> set[str] | None:
    """The Airflow user names, or None when the auth manager cannot list them without its database."""
    roles = configured_roles()
    return None if roles is None else set(roles)


def is_admin(name: str | None) -> bool:
    """Whether the user named `name` has the admin role (False when that cannot be known)."""
    if not name:
        return False
    roles = configured_roles()
    return roles is not None and roles.get(name) == ADMIN_ROLE


def is_admin_user(user: Any) -> bool:
    """Whether a logged-in user object is an admin: the simple auth manager's `role`, or FAB's `roles`."""
    role = getattr(user, "role", None)
    if isinstance(role, str):
        return role.strip().lower() == ADMIN_ROLE
    roles = getattr(user, "roles", None) or []
    return any(str(getattr(r, "name", r)).strip().lower() == ADMIN_ROLE for r in roles)
