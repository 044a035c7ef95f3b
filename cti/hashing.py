"""Salted scrypt hashes of secrets people type: the screen pop's passwords and the IVR's PINs.

One home for both, below the packages that use them (``screenpop.auth``, ``ivr.store``). The
stored form is ``scrypt$n$r$p$salt$hash`` (base64), so the cost travels with each hash and
can be raised without invalidating old ones; checks run in constant time. Slow on purpose:
call these off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14  # ~50 ms and 16 MiB per check on a current server
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N = 2**20  # refuse hashes that would make one check eat the machine


class HashError(ValueError):
    """A stored hash is malformed or asks for an unreasonable cost."""


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of ``password`` in the stored format."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches ``encoded``. Raises HashError for a malformed hash."""
    n, r, p, salt, expected = parse_hash(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """``(n, r, p, salt, digest)`` of a stored hash. Raises HashError."""
    parts = encoded.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not scrypt$n$r$p$salt$hash")
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = (
            base64.b64decode(parts[4], validate=True),
            base64.b64decode(parts[5], validate=True),
        )
    except ValueError as exc:
        raise HashError(f"bad password hash: {exc}") from None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16):
        raise HashError("bad password hash: scrypt parameters out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise HashError("bad password hash: salt or hash too short")
    return n, r, p, salt, digest


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r * p, dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
