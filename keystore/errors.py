"""Typed key-store errors. Each has a stable `code` and a message saying how to fix the problem.

Messages never contain secrets: a key id that looks like a secret key is not echoed back.
"""

from typing import ClassVar

from keytrail.schemas.secrets import identifier_holds_secret


def describe_key_id(key_id: str) -> str:
    """A key id safe to put in a message: a pasted secret (any vendor's, in any position) is
    replaced by a warning."""
    if key_id.startswith("kt_") or identifier_holds_secret(key_id[:512]):
        return "<a secret key, not a key id: never paste secrets; rotate it if it was shared>"
    return repr(key_id[:64])


class KeyStoreError(Exception):
    """Base of every key-store error; `code` is stable and safe to return from the API."""

    code: ClassVar[str] = "keystore_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The JSON body the API returns: `{"code": ..., "message": ...}`."""
        return {"code": self.code, "message": self.message}


class KeyNotFound(KeyStoreError):
    """No such key, or it belongs to a project the caller cannot see (the two are not told apart)."""

    code = "key_not_found"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"no key {describe_key_id(key_id)} in the projects you can access; "
            "check the id with `keytrail keys list`"
        )
        self.key_id = key_id


class PermissionDenied(KeyStoreError):
    """The caller's scope does not allow this action."""

    code = "permission_denied"


class InvalidKeyRequest(KeyStoreError):
    """A field of the request is malformed (name, scope, CIDR, quota, expiry, duration)."""

    code = "invalid_request"


class KeyStateConflict(KeyStoreError):
    """The action does not apply to the key's current status (e.g. enabling a revoked key)."""

    code = "key_state_conflict"


class KeyAlreadyRotated(KeyStateConflict):
    """The key already has a successor; rotate the successor instead."""

    code = "key_already_rotated"

    def __init__(self, key_id: str, successor_id: str | None) -> None:
        where = f"rotate its successor {successor_id!r}" if successor_id else "rotate its successor"
        super().__init__(f"key {describe_key_id(key_id)} was already rotated; {where} instead")
        self.key_id = key_id
        self.successor_id = successor_id


class UnsupportedStoreUrl(KeyStoreError):
    """The key store URL names a backend the key store does not support."""

    code = "unsupported_store_url"


class KeyStoreBusy(KeyStoreError):
    """Another process holds the key store's write lock longer than the bounded wait
    (KEYTRAIL_KEYSTORE_BUSY_TIMEOUT_SECONDS); the request can be retried."""

    code = "keystore_busy"
    retry_after_seconds: ClassVar[int] = 1

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "the key store is locked by another process (a long write, a backup, an open sqlite3 shell); "
            "retry shortly, and find the process holding it if this lasts"
        )


class KeyStoreCorrupt(KeyStoreError):
    """The key store file exists but is not a readable key store."""

    code = "keystore_corrupt"
