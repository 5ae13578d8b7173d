"""Keyed hashing of API keys: the store keeps HMAC-SHA-256(server secret, key), never the key."""

import hmac

MIN_SECRET_BYTES = 16


class KeyHasher:
    """HMAC-SHA-256 with the server secret (`KEYTRAIL_SECRET`); the only way a key is stored."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the hashing secret must be at least {MIN_SECRET_BYTES} bytes; set KEYTRAIL_SECRET "
                "to a long random value"
            )
        self._secret = secret

    def digest(self, presented_key: str) -> bytes:
        """The 32-byte keyed hash of a key."""
        return hmac.digest(self._secret, presented_key.encode("ascii", "replace"), "sha256")

    def hexdigest(self, presented_key: str) -> str:
        """The keyed hash as 64 lowercase hex characters, as stored in `api_keys.key_hash`."""
        return self.digest(presented_key).hex()

    def __repr__(self) -> str:
        return "KeyHasher(secret=<hidden>)"
