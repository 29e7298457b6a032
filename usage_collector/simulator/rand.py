"""Deterministic, stateless pseudo-randomness: everything is a pure function of integers.

The simulator never uses :mod:`random`: a value is ``mix64`` of (series key, hour, draw number), so any hour of any
series can be computed on its own, in any order, on any thread, with the same result.
"""

from __future__ import annotations

import hashlib

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a well-mixed 64-bit integer from any integer."""
    x = (x + GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def unit(x: int) -> float:
    """A float in [0, 1) from an integer (via :func:`mix64`)."""
    return (mix64(x) >> 11) / 9007199254740992.0


def draw(key: int, n: int) -> int:
    """The ``n``-th 64-bit draw of stream ``key``."""
    return mix64((key + (n + 1) * GOLDEN) & MASK64)


def hash_key(*parts: object) -> int:
    """A stable 64-bit key from arbitrary printable parts (blake2b; independent of ``PYTHONHASHSEED``)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def ident(prefix: str, length: int, *parts: object) -> str:
    """A stable identifier such as ``proj_`` + 24 alphanumerics, derived from ``parts``."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=32).digest()
    n = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, len(_ALPHABET))
        chars.append(_ALPHABET[r])
    return prefix + "".join(chars)
