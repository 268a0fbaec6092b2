"""Announce tokens: handed out in ``get_peers`` replies, checked in ``announce_peer``.

Owns: the rotating secrets and the token scheme. BEP 5 suggests "the SHA1 hash of
the IP address concatenated onto a secret that changes every five minutes and
tokens up to ten minutes old are accepted". We use BLAKE2b keyed with the secret
(a MAC, so a token reveals nothing about the secret) over the querier's IP,
truncated to 8 bytes. Only the IP counts, not the port: BEP 5 binds a token to
"the same IP address".

Pure: no I/O, no clock (time arrives as ``now`` in seconds), no global
randomness (secrets come from the ``rng`` given). Must not import trio, socket,
time, asyncio or os.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Final

__all__ = ["TokenManager", "DEFAULT_ROTATE_EVERY", "TOKEN_LENGTH", "SECRET_LENGTH"]

#: Seconds between secret rotations (BEP 5: "a secret that changes every five
#: minutes"). A token is accepted with the current or the previous secret, so it
#: lives between one and two rotations: 5 to 10 minutes.
DEFAULT_ROTATE_EVERY: Final = 300.0

#: Bytes in a token. BEP 5 leaves the length open (libtorrent sends 4 bytes);
#: 8 bytes make guessing hopeless (2**-64 per try) and keep replies small.
TOKEN_LENGTH: Final = 8

#: Bytes of secret key per rotation.
SECRET_LENGTH: Final = 20


class TokenManager:
    """Issue and check announce tokens bound to the querier's IP (BEP 5).

    Rotation is lazy: every call first rotates the secrets if ``now`` has
    passed :attr:`next_rotation`. After an idle gap of two rotations or more both
    secrets are replaced, so tokens from before the gap are refused.

    Args:
        rng: source of the secrets (use ``random.SystemRandom()`` in production).
        rotate_every: seconds between rotations.
        now: the current time (seconds); the first rotation is due at
            ``now + rotate_every``.

    Raises:
        ValueError: ``rotate_every`` is not positive.
    """

    __slots__ = ("_rng", "_rotate_every", "_current", "_previous", "_deadline")

    def __init__(self, *, rng: random.Random, rotate_every: float = DEFAULT_ROTATE_EVERY, now: float = 0.0) -> None:
        if not rotate_every > 0:
            raise ValueError(f"rotate_every must be positive, not {rotate_every}")
        self._rng = rng
        self._rotate_every = float(rotate_every)
        self._current = self._new_secret()
        # No token was ever issued with this one: nothing matches it.
        self._previous = self._new_secret()
        self._deadline = now + self._rotate_every

    @property
    def next_rotation(self) -> float:
        """When the secrets next rotate (seconds, the caller's clock)."""
        return self._deadline

    @property
    def rotate_every(self) -> float:
        """Seconds between rotations."""
        return self._rotate_every

    def rotate_if_due(self, now: float) -> bool:
        """Rotate the secrets if ``now`` has reached :attr:`next_rotation`.

        Returns:
            Whether a rotation happened.
        """
        if now < self._deadline:
            return False
        missed = int((now - self._deadline) // self._rotate_every) + 1
        if missed == 1:
            self._previous = self._current
        else:
            # Idle for two rotations or more: every token issued is too old.
            self._previous = self._new_secret()
        self._current = self._new_secret()
        self._deadline += missed * self._rotate_every
        return True

    def issue(self, ip: str, now: float) -> bytes:
        """Return the token for a querier at ``ip`` (text, as the transport gives it)."""
        self.rotate_if_due(now)
        return self._token(self._current, ip)

    def is_valid(self, token: bytes, ip: str, now: float) -> bool:
        """Return whether ``token`` was issued to ``ip`` within the last one or two rotations."""
        self.rotate_if_due(now)
        if not isinstance(token, bytes) or len(token) != TOKEN_LENGTH:
            return False
        return hmac.compare_digest(token, self._token(self._current, ip)) or hmac.compare_digest(
            token, self._token(self._previous, ip)
        )

    def _new_secret(self) -> bytes:
        return self._rng.getrandbits(SECRET_LENGTH * 8).to_bytes(SECRET_LENGTH, "big")

    @staticmethod
    def _token(secret: bytes, ip: str) -> bytes:
        return hashlib.blake2b(ip.encode("ascii", "replace"), key=secret, digest_size=TOKEN_LENGTH).digest()
