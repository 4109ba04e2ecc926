"""Salted password hashes with the standard library's scrypt.

A hash string carries its own parameters, ``scrypt$n$r$p$salt_b64$hash_b64``, so they can be raised
later without invalidating stored accounts; verification recomputes with the stored parameters and
compares with ``hmac.compare_digest``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14  # CPU/memory cost: ~16 MiB and ~50 ms per hash on one core
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_SCRYPT_N = 2**20  # refuse absurd parameters from a tampered hash rather than exhaust memory
_MAXMEM = 256 * 1024 * 1024
_SCHEME = "scrypt"

_dummy_hash: str | None = None


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=KEY_BYTES
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A new hash with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for any malformed hash."""
    try:
        scheme, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, key = base64.b64decode(salt_s), base64.b64decode(key_s)
    except (ValueError, AttributeError):
        return False
    if scheme != _SCHEME or not (1 < n <= MAX_SCRYPT_N and 0 < r <= 64 and 0 < p <= 16):
        return False
    try:
        candidate = _derive(password, salt, n, r, p)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(candidate, key)


def burn_time(password: str) -> None:
    """Spend the time of one verification, so that unknown users answer as slowly as known ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_hex(16))
    verify_password(password, _dummy_hash)
