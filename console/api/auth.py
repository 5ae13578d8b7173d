"""Authentication with KeyTrail keys: `Authorization: Bearer kt_…`, scopes decide what a caller may do.

Scopes: `admin` (every project, every action), `project:write` (manage the key's own project),
`project:read` (read the key's own project), `ingest` (POST /v1/events and /v1/verify).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi import Request

from keytrail.console.api.errors import ApiError
from keytrail.keystore.caller import Caller
from keytrail.keystore.listing import KeyFilter
from keytrail.keystore.store import KeyStore
from keytrail.producers.client_address import ClientAddressResolver
from keytrail.schemas.keys import KeyStatus
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

log = logging.getLogger(__name__)

ADMIN: Final = "admin"
PROJECT_READ: Final = "project:read"
PROJECT_WRITE: Final = "project:write"
INGEST: Final = "ingest"
API_SCOPES: Final = (ADMIN, PROJECT_WRITE, PROJECT_READ, INGEST)
BOOTSTRAP_PROJECT: Final = "keytrail"
ADMIN_KEY_FILE: Final = "admin.key"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id and project, and the API scopes it holds."""

    key_id: str
    project_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def caller(self) -> Caller:
        """The key-store caller: admins see every project, others only their own."""
        actor = f"api:{self.key_id}"
        if self.is_admin:
            return Caller.admin(actor)
        return Caller.project(self.project_id, actor, write=PROJECT_WRITE in self.scopes)

    def visible_project(self) -> str | None:
        """None for admins (every project), else the key's own project."""
        return None if self.is_admin else self.project_id

    def require(self, *scopes: str) -> None:
        """Refuse unless the caller holds `admin` or one of `scopes`."""
        if self.is_admin or any(scope in self.scopes for scope in scopes):
            return
        raise ApiError(
            403,
            "insufficient_scope",
            f"this endpoint needs one of the scopes {', '.join((ADMIN, *scopes))}; "
            "use a key that carries one",
        )


LOCAL_PRINCIPAL: Final = Principal(
    key_id="local-no-auth", project_id=BOOTSTRAP_PROJECT, scopes=frozenset({ADMIN})
)
"""Who every request is in `--no-auth` mode (local development only)."""


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


UNKNOWN_CLIENT: Final = "0.0.0.0"


def _resolver(request: Request) -> ClientAddressResolver:
    resolver = getattr(request.app.state, "client_addresses", None)
    if resolver is None:
        settings = getattr(request.app.state, "settings", None)
        resolver = ClientAddressResolver(settings.trusted_proxy_list() if settings is not None else ())
        request.app.state.client_addresses = resolver
    return resolver


def client_ip(request: Request) -> str:
    """The client's address: the TCP peer, unless the peer is one of KEYTRAIL_TRUSTED_PROXIES and sent
    `X-Forwarded-For` / `Forwarded` (then the first untrusted hop from the right). 0.0.0.0 when the
    transport gives no address that parses (it then matches no allowlist)."""
    host = request.client.host if request.client else None
    return _resolver(request).resolve(
        host, request.headers.get("x-forwarded-for"), request.headers.get("forwarded")
    )


_MISSING = Verification(Outcome.INVALID, reason="missing Authorization: Bearer <KeyTrail key>")


def authenticate(store: KeyStore, token: str | None, ip: str) -> tuple[Principal | None, Verification]:
    """The caller (None when refused) and the key store's verdict. Never logs or returns the token."""
    if token is None:
        return None, _MISSING
    verdict = store.verify(token, None, ip)
    if not verdict.ok or verdict.key_id is None or verdict.project_id is None:
        return None, verdict
    held = frozenset(scope for scope in API_SCOPES if store.verify(token, scope, ip).ok)
    return Principal(verdict.key_id, verdict.project_id, held), verdict


def has_active_admin_key(store: KeyStore) -> bool:
    keys = store.list_keys(KeyFilter(statuses=(KeyStatus.ACTIVE,)))
    return any(ADMIN in record.scopes or "*" in record.scopes for record in keys)


def bootstrap_admin_key(store: KeyStore, data_dir: Path) -> str | None:
    """On first start (no active admin key), create one, write it to DATA_DIR/admin.key (0600),
    print it once to stderr and return it; otherwise return None."""
    if has_active_admin_key(store):
        return None
    record, secret = store.create_key(
        "bootstrap admin",
        BOOTSTRAP_PROJECT,
        actor="system:bootstrap",
        scopes=[ADMIN],
        owner="keytrail serve",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADMIN_KEY_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
    print(
        f"KeyTrail: created the bootstrap admin key {record.id} (shown once, also saved to {path}, mode 0600):\n"
        f"  {secret}",
        file=sys.stderr,
        flush=True,
    )
    return secret
