"""Tests for the accounts CLI, `python -m mvp.app.users`, run as a user would (subprocess, MVP_PASSWORD).

Run: python -m pytest tests/test_users.py -q
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mvp.app import users as users_cli
from mvp.store import Store

REPO = Path(__file__).resolve().parents[1]


def run_cli(tmp_path: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MVP_PASSWORD", "MVP_DB")}
    env["PYTHONPATH"] = str(REPO)
    if password is not None:
        env["MVP_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "mvp.app.users", "--db", str(tmp_path / "feedback.db"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_add_list_disable_enable_passwd(tmp_path: Path) -> None:
    added = run_cli(tmp_path, "add", "李医生", "--role", "clinician", password="first-password")
    assert added.returncode == 0, added.stderr
    assert "已创建账户 李医生（clinician）" in added.stdout
    assert run_cli(tmp_path, "add", "admin", "--role", "admin", password="admin-password").returncode == 0

    listed = run_cli(tmp_path, "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "role", "disabled", "created", "(UTC)"]
    assert lines[1].split()[:3] == ["李医生", "clinician", "no"]
    assert lines[2].split()[:3] == ["admin", "admin", "no"]

    store = Store(tmp_path / "feedback.db")
    assert store.authenticate("李医生", "first-password")

    assert run_cli(tmp_path, "disable", "李医生").returncode == 0
    assert not store.authenticate("李医生", "first-password")
    assert run_cli(tmp_path, "list").stdout.splitlines()[1].split()[2] == "yes"
    assert run_cli(tmp_path, "enable", "李医生").returncode == 0
    assert store.authenticate("李医生", "first-password")

    changed = run_cli(tmp_path, "passwd", "李医生", password="second-password")
    assert changed.returncode == 0, changed.stderr
    assert store.authenticate("李医生", "second-password")
    assert not store.authenticate("李医生", "first-password")


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (("add", "li", "--role", "clinician"), "short", "密码太短"),
        (("add", "li", "--role", "clinician"), None, "请设置环境变量 MVP_PASSWORD"),
        (("add", " li", "--role", "clinician"), "long-enough", "首尾不能有空格"),
    ],
)
def test_add_errors_are_one_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], password: str | None, message: str
) -> None:
    result = run_cli(tmp_path, *args, password=password)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "feedback.db").exists()  # nothing created for a refused command


def test_duplicate_unknown_and_missing_database(tmp_path: Path) -> None:
    missing = run_cli(tmp_path, "list")
    assert missing.returncode == 1 and "数据库文件不存在" in missing.stderr
    assert not (tmp_path / "feedback.db").exists()

    assert run_cli(tmp_path, "add", "li", "--role", "demo", password="password-1").returncode == 0
    duplicate = run_cli(tmp_path, "add", "li", "--role", "admin", password="password-2")
    assert duplicate.returncode == 1 and "用户名已存在：li" in duplicate.stderr
    for command in ("disable", "enable", "passwd"):
        result = run_cli(tmp_path, command, "nobody", password="password-3")
        assert result.returncode == 1 and "用户不存在：nobody" in result.stderr
        assert "Traceback" not in result.stderr
    bad_role = run_cli(tmp_path, "add", "x", "--role", "root", password="password-4")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


def test_every_flag_has_help_and_there_is_no_password_flag() -> None:
    parser = users_cli.make_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    assert {p.prog.split()[-1] for p in parsers[1:]} == {"add", "list", "disable", "enable", "passwd", "purge", "unlock"}
    for p in parsers:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (p.prog, action.dest)
            assert not any("pass" in opt for opt in action.option_strings), action.option_strings


def test_help_runs(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "add", "--help")
    assert result.returncode == 0 and "--role" in result.stdout and "MVP_PASSWORD" in result.stdout


def test_prompted_passwords_must_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MVP_PASSWORD", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["password-1", "password-2"])
    monkeypatch.setattr(users_cli.getpass, "getpass", lambda prompt="": next(answers))
    db = str(tmp_path / "f.db")
    assert users_cli.main(["--db", db, "add", "li", "--role", "clinician"]) == 1
    assert "两次输入的密码不一致" in capsys.readouterr().err
    assert Store(db).get_user("li") is None

    answers = iter(["password-1", "password-1"])
    assert users_cli.main(["--db", db, "add", "li", "--role", "clinician"]) == 0
    assert Store(db).authenticate("li", "password-1")


def test_format_table_pads_by_display_width() -> None:
    table = users_cli.format_table([("name", "role"), ("李医生", "admin"), ("bob", "demo")])
    first, second, third = table.splitlines()
    # Three Chinese characters take six columns: the second column lines up on screen.
    assert users_cli._width(second[: second.index("admin")]) == users_cli._width(third[: third.index("demo")]) == 8


def test_account_changes_are_audited(tmp_path):
    assert run_cli(tmp_path, "add", "zhou", "--role", "clinician", password="zhou-password").returncode == 0
    assert run_cli(tmp_path, "disable", "zhou").returncode == 0
    actions = [(e["actor"], e["action"], e["target"]) for e in Store(tmp_path / "feedback.db").list_audit()]
    assert actions == [("cli", "account_disabled", "zhou"), ("cli", "account_added", "zhou")]


def test_purge_is_a_dry_run_unless_confirmed(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    store = Store(db)
    store.add_user("li", "password-li-1", "clinician")
    conv = store.create_conversation("li", "intake", store.register_model_version("models/demo"))
    store.add_user_message(conv, "很久以前的对话")
    sdb = store.database()
    sdb.execute("UPDATE conversations SET updated_at = '2020-01-01T00:00:00.000+00:00'")
    sdb.conn.commit()
    sdb.close()
    dry = run_cli(tmp_path, "purge", "--older-than", "30")
    assert dry.returncode == 0 and "将删除 1 段对话" in dry.stdout and "--yes" in dry.stdout
    assert store.get_conversation(conv)
    done = run_cli(tmp_path, "purge", "--older-than", "30", "--yes")
    assert done.returncode == 0 and "已删除 1 段对话" in done.stdout
    assert store.list_conversations() == []
    bad = run_cli(tmp_path, "purge", "--older-than", "0")
    assert bad.returncode == 1 and "保留天数" in bad.stderr and "Traceback" not in bad.stderr
