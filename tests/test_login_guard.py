"""mvp.app.auth.LoginGuard: repeated failures lock one account (no hashing while locked), others not."""

import logging

from mvp.app.auth import LOCK_S, LoginGuard


def test_thirty_wrong_passwords_lock_one_account_and_not_others(caplog):
    accounts = {"wang": "right-password", "li": "li-password"}
    hashed = []

    def check(name, password):
        hashed.append(name)
        return accounts.get(name) == password

    now = [1000.0]
    guard = LoginGuard(check, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="mvp.app.auth")
    assert not any(guard("wang", f"guess-{i}") for i in range(30))
    assert guard("wang", "right-password") is False  # locked: the right password is refused too
    assert hashed.count("wang") < 30  # once locked, attempts are refused without hashing
    assert guard("li", "li-password") is True  # other accounts log in normally
    assert "guess-" not in caplog.text and "right-password" not in caplog.text
    assert "failed login: 'wang'" in caplog.text and "locked" in caplog.text
    now[0] += LOCK_S + 1
    assert guard("wang", "right-password") is True  # the lock ends


def test_one_client_guessing_many_accounts_is_throttled():
    import asyncio

    from mvp.app.auth import CLIENT, MAX_CLIENT_FAILURES

    guard = LoginGuard(lambda name, password: password == "pw-" + name)

    async def attempts():
        CLIENT.set("10.0.0.9")
        results = [await guard.check(f"user{i}", "nope") for i in range(MAX_CLIENT_FAILURES)]
        results.append(await guard.check("li", "pw-li"))  # this client is locked now
        CLIENT.set("10.0.0.7")
        results.append(await guard.check("li", "pw-li"))  # another client is not
        return results

    results = asyncio.run(attempts())
    assert not any(results[:-1]) and results[-1] is True


def test_an_admin_unlock_lifts_the_lock_at_once(tmp_path):
    from mvp.app import users as users_cli
    from mvp.store import Store, passwords

    passwords.SCRYPT_N, old = 2**10, passwords.SCRYPT_N
    try:
        store = Store(tmp_path / "feedback.db")
        store.add_user("wang", "right-password", "clinician")
        guard = LoginGuard(store.authenticate, unlocked_since=store.unlocked_since)
        assert not any(guard("wang", f"guess-{i}") for i in range(30))
        assert guard("wang", "right-password") is False  # locked
        assert users_cli.main(["--db", str(tmp_path / "feedback.db"), "unlock", "wang"]) == 0
        assert guard("wang", "right-password") is True  # lifted without waiting LOCK_S
        assert store.list_audit()[0]["action"] == "account_unlocked"
        assert users_cli.main(["--db", str(tmp_path / "feedback.db"), "unlock", "nobody"]) == 1
    finally:
        passwords.SCRYPT_N = old
