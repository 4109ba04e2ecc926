"""Accounts: add, authenticate, enable/disable, change password (table ``users``)."""

from __future__ import annotations

from typing import Any

from . import passwords
from .base import StoreBase
from .errors import NotFoundError, ValidationError
from .schema import utc_now
from .validation import (
    MAX_PASSWORD_CHARS,
    MAX_USER_NAME_CHARS,
    ROLES,
    check_choice,
    check_password,
    check_user_name,
)

_USER_COLUMNS = "name, role, disabled, created_at, updated_at"


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "disabled": bool(row["disabled"])}


class UsersMixin(StoreBase):
    def add_user(self, name: str, password: str, role: str = "clinician") -> dict[str, Any]:
        """Create an account; the password is stored only as a salted scrypt hash."""
        name = check_user_name(name)
        check_password(password)
        role = check_choice(role, "角色", ROLES)
        password_hash = passwords.hash_password(password)  # slow: outside the write lock
        now = utc_now()
        with self._write() as conn:
            if self._row(conn, "SELECT 1 AS x FROM users WHERE name = ?", (name,)):
                raise ValidationError(f"用户名已存在：{name}")
            conn.execute(
                "INSERT INTO users (name, role, password_hash, disabled, created_at, updated_at)"
                " VALUES (?, ?, ?, 0, ?, ?)",
                (name, role, password_hash, now, now),
            )
        return {"name": name, "role": role, "disabled": False, "created_at": now, "updated_at": now}

    def authenticate(self, name: str, password: str) -> bool:
        """True only for an existing, enabled account with this password. Never raises on bad input.

        Unknown names and malformed input cost one scrypt computation too, so the answer time does
        not reveal which accounts exist.
        """
        if (
            not isinstance(name, str)
            or not isinstance(password, str)
            or not name
            or len(name) > MAX_USER_NAME_CHARS
            or len(password) > MAX_PASSWORD_CHARS
        ):
            passwords.burn_time(password if isinstance(password, str) else "")
            return False
        with self._read() as conn:
            row = self._row(conn, "SELECT password_hash, disabled FROM users WHERE name = ?", (name,))
        if row is None:
            passwords.burn_time(password)
            return False
        matches = passwords.verify_password(password, row["password_hash"])
        return matches and not row["disabled"]

    def get_user(self, name: str) -> dict[str, Any] | None:
        """The account (without its hash), or None."""
        if not isinstance(name, str):
            return None
        with self._read() as conn:
            row = self._row(conn, f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))
        return None if row is None else _public(row)

    def list_users(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = self._rows(conn, f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at, name")
        return [_public(r) for r in rows]

    def count_users(self, *, enabled_only: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM users" + (" WHERE disabled = 0" if enabled_only else "")
        with self._read() as conn:
            return int(conn.execute(sql).fetchone()[0])

    def _set_user_field(self, name: str, column: str, value: Any) -> None:
        if not isinstance(name, str):
            raise ValidationError(f"用户名必须是文本，收到 {name!r}")
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE users SET {column} = ?, updated_at = ? WHERE name = ?",
                (value, utc_now(), name),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"用户不存在：{name}")

    def disable_user(self, name: str) -> None:
        """The account can no longer log in, chat or rate; its data stays (and is excluded from
        exports unless asked). The last enabled admin cannot be disabled (nobody could manage the
        app any more)."""
        if not isinstance(name, str):
            raise ValidationError(f"用户名必须是文本，收到 {name!r}")
        with self._write() as conn:
            row = conn.execute("SELECT role, disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"用户不存在：{name}")
            role, disabled = row[0], row[1]
            if role == "admin" and not disabled:
                admins = conn.execute(
                    "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0"
                ).fetchone()[0]
                if admins <= 1:
                    raise ValidationError(f"{name} 是最后一个可用的管理员，不能停用：请先创建或启用另一个管理员")
            conn.execute("UPDATE users SET disabled = 1, updated_at = ? WHERE name = ?", (utc_now(), name))

    def enable_user(self, name: str) -> None:
        self._set_user_field(name, "disabled", 0)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        self._set_user_field(name, "password_hash", passwords.hash_password(password))
