"""The login check given to Gradio (``launch(auth=guard.check)``): throttling in front of the hash.

Gradio 6.31's login route is ``async`` and awaits the ``auth`` callable when it is a coroutine
function, but calls a plain function on the event loop, where every scrypt check (~30 ms) stalls
every other request. `LoginGuard.check` is a coroutine: the throttle is decided at once, and the
hash runs in a bounded worker pool (``HASH_WORKERS`` at a time, at most ``MAX_WAITING`` waiting; more
are refused without hashing), so a login flood cannot freeze chat.

Throttling: after ``MAX_FAILURES`` wrong passwords for one account within ``WINDOW_S`` the account is
locked for ``LOCK_S`` (the right password is refused too, without hashing); one client address
with ``MAX_CLIENT_FAILURES`` failures within the window is refused the same way. Other accounts
and clients log in normally. Every failed and successful login is logged with the account name,
never the password. Locks live in memory: restarting the app lifts them, and an admin lifts one
account's lock with `python -m mvp.app.users unlock NAME` (an audit entry the guard looks for, only
while that account is locked, so a normal login costs no database read).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timezone

import anyio

log = logging.getLogger("mvp.app.auth")

MAX_FAILURES = 10  # wrong passwords per account within WINDOW_S before it is locked
MAX_CLIENT_FAILURES = 30  # wrong passwords per client address within WINDOW_S
WINDOW_S = 300.0
LOCK_S = 300.0
HASH_WORKERS = 2  # password hashes computed at once (each ~30 ms of one core)
MAX_WAITING = 16  # logins waiting for a hash worker; more are refused at once
MAX_TRACKED = 10_000  # account names and client addresses remembered at most

# The client address of the request being handled, set by mvp.app.web.SecurityMiddleware (the
# auth callable itself only receives the name and the password).
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("mvp_client", default="-")


class _Failures:
    """Recent failure times per key, with a lock time once a key reaches its limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.times: OrderedDict[str, deque[float]] = OrderedDict()
        self.locked_until: dict[str, float] = {}
        self.locked_at: dict[str, str] = {}  # wall-clock ISO time of the lock (for an admin's unlock)

    def locked(self, key: str, now: float) -> bool:
        until = self.locked_until.get(key)
        if until is not None and until <= now:
            self.unlock(key)
            return False
        return until is not None

    def unlock(self, key: str) -> None:
        self.locked_until.pop(key, None)
        self.locked_at.pop(key, None)

    def fail(self, key: str, now: float) -> bool:
        """Record a failure; True when it locks the key."""
        times = self.times.pop(key, None) or deque()
        self.times[key] = times
        if len(self.times) > MAX_TRACKED:
            self.times.popitem(last=False)
        times.append(now)
        while times and times[0] < now - WINDOW_S:
            times.popleft()
        if len(times) >= self.limit:
            self.locked_until[key] = now + LOCK_S
            self.locked_at[key] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            times.clear()
            return True
        return False

    def clear(self, key: str) -> None:
        self.times.pop(key, None)


class LoginGuard:
    def __init__(self, verify: Callable[[str, str], bool], clock: Callable[[], float] = time.monotonic,
                 unlocked_since: Callable[[str, str], bool] | None = None):
        """`unlocked_since(name, iso_time)`: whether an admin lifted the account's lock after that time
        (`Store.unlocked_since`)."""
        self._verify = verify
        self._unlocked_since = unlocked_since
        self._clock = clock
        self._accounts = _Failures(MAX_FAILURES)
        self._clients = _Failures(MAX_CLIENT_FAILURES)
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._waiting = 0

    def refused(self, name: str, client: str) -> str | None:
        """Why a login is refused before any hashing (None: go ahead)."""
        now = self._clock()
        with self._lock:
            locked_at = self._accounts.locked_at.get(name) if self._accounts.locked(name, now) else None
        if locked_at is not None and self._unlocked_since is not None and self._unlocked_since(name, locked_at):
            with self._lock:
                self._accounts.unlock(name)
            log.info("lock of %r lifted by an admin", name)
            locked_at = None
        with self._lock:
            if locked_at is not None:
                return "account locked"
            if self._clients.locked(client, now):
                return "client locked"
        return None

    def _record(self, name: str, client: str, ok: bool) -> None:
        now = self._clock()
        with self._lock:
            if ok:
                self._accounts.clear(name)
                locked = []
            else:
                locked = [what for what, table, key in (("account", self._accounts, name),
                                                        ("client", self._clients, client))
                          if table.fail(key, now)]
        if ok:
            log.info("login: %r from %s", name, client)
            return
        log.info("failed login: %r from %s", name, client)
        for what in locked:
            log.warning("%s locked for %.0f s after repeated failed logins: %r from %s",
                        what, LOCK_S, name, client)

    def __call__(self, name: str, password: str) -> bool:
        """The check in the calling thread (CLI tools, tests)."""
        client = CLIENT.get()
        reason = self.refused(name, client)
        if reason:
            log.warning("login refused (%s): %r from %s", reason, name, client)
            return False
        ok = bool(self._verify(name, password))
        self._record(name, client, ok)
        return ok

    async def check(self, name: str, password: str) -> bool:
        """The check for Gradio's async login route: the hash runs off the event loop."""
        client = CLIENT.get()
        reason = self.refused(name, client)
        if reason is None and self._waiting >= MAX_WAITING:
            reason = "too many logins waiting"
        if reason:
            log.warning("login refused (%s): %r from %s", reason, name, client)
            return False
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(HASH_WORKERS)
        self._waiting += 1  # only touched on the event loop
        try:
            ok = bool(await anyio.to_thread.run_sync(self._verify, name, password, limiter=self._limiter))
        finally:
            self._waiting -= 1
        self._record(name, client, ok)
        return ok
