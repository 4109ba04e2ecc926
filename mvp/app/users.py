"""Manage the app's accounts in feedback.db.

    python -m mvp.app.users add NAME --role clinician|admin|demo   # create an account
    python -m mvp.app.users list                                   # name, role, disabled, created
    python -m mvp.app.users disable NAME                           # can no longer log in or rate
    python -m mvp.app.users enable NAME
    python -m mvp.app.users passwd NAME                            # set a new password
    python -m mvp.app.users unlock NAME                            # lift a login lock (repeated failures)
    python -m mvp.app.users purge --older-than 90                  # dry run: what retention would delete
    python -m mvp.app.users purge --older-than 90 --yes            # delete it (recorded in the logs)
    python -m mvp.app.users --db path/to/feedback.db list          # another database file

Passwords are read from the environment variable MVP_PASSWORD when it is set (for scripts), otherwise
prompted for twice without echo. There is deliberately no password flag: it would land in shell
history. User errors print one line and exit with status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import unicodedata
from collections.abc import Sequence

from mvp.store import MIN_PASSWORD_CHARS, ROLES, Store, StoreError
from mvp.store.validation import check_password, check_user_name

PASSWORD_ENV = "MVP_PASSWORD"
DB_ENV = "MVP_DB"
DEFAULT_DB = "feedback.db"
AUDIT_ACTOR = "cli"  # who the audit log names for changes made with this tool


class CliError(Exception):
    """A user error to print as one line."""


def read_password() -> str:
    """The password from $MVP_PASSWORD, or typed twice at a terminal."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        check_password(from_env)
        return from_env
    if not sys.stdin.isatty():
        raise CliError(f"无法提示输入密码（不是终端）：请设置环境变量 {PASSWORD_ENV}")
    first = getpass.getpass(f"密码（至少 {MIN_PASSWORD_CHARS} 个字符）：")
    check_password(first)
    if getpass.getpass("再输入一次：") != first:
        raise CliError("两次输入的密码不一致，未做任何修改")
    return first


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, padded by display width (Chinese characters count double)."""
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    return "\n".join(lines)


def _open(db: str, *, create: bool) -> Store:
    if not create and not os.path.exists(db):
        raise CliError(f"数据库文件不存在：{db}（先用 `python -m mvp.app.users add NAME --role admin` 创建第一个账户）")
    return Store(db)


def cmd_add(args: argparse.Namespace) -> str:
    name = check_user_name(args.name)
    # Check for a duplicate before asking for a password, and create no file before it is valid.
    if os.path.exists(args.db) and _open(args.db, create=False).get_user(name) is not None:
        raise CliError(f"用户名已存在：{name}")
    password = read_password()
    store = _open(args.db, create=True)
    user = store.add_user(name, password, args.role)
    store.add_audit(AUDIT_ACTOR, "account_added", user["name"], {"role": user["role"]})
    return f"已创建账户 {user['name']}（{user['role']}）"


def cmd_list(args: argparse.Namespace) -> str:
    users = _open(args.db, create=False).list_users()
    if not users:
        return "（没有账户）"
    rows = [("name", "role", "disabled", "created (UTC)")]
    rows += [(u["name"], u["role"], "yes" if u["disabled"] else "no", u["created_at"][:19].replace("T", " "))
             for u in users]
    return format_table(rows)


def cmd_disable(args: argparse.Namespace) -> str:
    store = _open(args.db, create=False)
    store.disable_user(args.name)
    store.add_audit(AUDIT_ACTOR, "account_disabled", args.name)
    return f"已停用账户 {args.name}"


def cmd_enable(args: argparse.Namespace) -> str:
    store = _open(args.db, create=False)
    store.enable_user(args.name)
    store.add_audit(AUDIT_ACTOR, "account_enabled", args.name)
    return f"已启用账户 {args.name}"


def cmd_passwd(args: argparse.Namespace) -> str:
    store = _open(args.db, create=False)
    if store.get_user(args.name) is None:
        raise CliError(f"用户不存在：{args.name}")
    store.set_password(args.name, read_password())
    store.add_audit(AUDIT_ACTOR, "password_changed", args.name)
    return f"已更新 {args.name} 的密码"


def cmd_unlock(args: argparse.Namespace) -> str:
    store = _open(args.db, create=False)
    if store.get_user(args.name) is None:
        raise CliError(f"用户不存在：{args.name}")
    store.add_audit(AUDIT_ACTOR, "account_unlocked", args.name)
    return f"已解除 {args.name} 的登录锁定（运行中的应用在该账户下一次登录时生效）"


def cmd_purge(args: argparse.Namespace) -> str:
    result = _open(args.db, create=False).purge_conversations(args.older_than, dry_run=not args.yes)
    verb = "将删除" if result["dry_run"] else "已删除"
    lines = [f"{verb} {len(result['conversations'])} 段对话（{result['messages']} 条消息），"
             f"最后更新早于 {result['cutoff'][:19].replace('T', ' ')} UTC"]
    if result["kept_flagged"]:
        lines.append(f"保留 {len(result['kept_flagged'])} 段有未复核安全标记的对话：{result['kept_flagged']}")
    if result["dry_run"] and result["conversations"]:
        lines.append("这是预演，没有删除任何内容；确认后加 --yes 执行")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mvp.app.users",
        description=f"Manage accounts in feedback.db. Passwords come from ${PASSWORD_ENV} or a prompt.",
    )
    parser.add_argument(
        "--db",
        default=os.environ.get(DB_ENV, DEFAULT_DB),
        help=f"path of the feedback database (default: ${DB_ENV} or {DEFAULT_DB})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    text = "create an account (password from $MVP_PASSWORD or a prompt, typed twice)"
    add = commands.add_parser("add", help=text, description=text)
    add.add_argument("name", metavar="NAME", help="account name (1-64 characters, no control characters)")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="clinician: chats and rates; admin: also dashboard, versions, exports; "
                          "demo: chats, marked as demo, cannot rate")
    add.set_defaults(handler=cmd_add)

    text = "list accounts: name, role, disabled, created"
    lst = commands.add_parser("list", help=text, description=text)
    lst.set_defaults(handler=cmd_list)

    text = "retention: delete conversations not updated for DAYS days (dry run unless --yes)"
    purge = commands.add_parser("purge", help=text, description=text)
    purge.add_argument("--older-than", type=int, required=True, metavar="DAYS", help="days since the last update")
    purge.add_argument("--yes", action="store_true", help="really delete (default: only show what would go)")
    purge.set_defaults(handler=cmd_purge)

    for name, handler, text in (
        ("disable", cmd_disable, "disable an account (it can no longer log in or rate; data is kept)"),
        ("enable", cmd_enable, "re-enable a disabled account"),
        ("passwd", cmd_passwd, "set a new password (from $MVP_PASSWORD or a prompt)"),
        ("unlock", cmd_unlock, "lift the login lock of an account (after repeated wrong passwords)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("name", metavar="NAME", help="account name")
        sub.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        print(args.handler(args))
    except (StoreError, CliError) as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\n已取消，未做任何修改", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
