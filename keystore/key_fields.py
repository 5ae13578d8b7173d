"""Validation and normalisation of the editable fields of a key (name, scopes, quota, CIDRs)."""

import re
from collections.abc import Iterable
from ipaddress import ip_network

from keytrail.keystore.errors import InvalidKeyRequest
from keytrail.schemas.secrets import find_secrets, redact_text

_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_SCOPE = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,99}\*?)$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_SCOPES = 100
MAX_CIDRS = 100


def clean_name(name: str) -> str:
    """A key name: 1 to 200 printable characters, trimmed."""
    name = name.strip()
    if not name or len(name) > 200 or _CONTROL_CHARACTERS.search(name):
        raise InvalidKeyRequest("a key name needs 1 to 200 printable characters, e.g. 'billing-worker prod'")
    _refuse_secret("a key name", name)
    return name


def _refuse_secret(what: str, value: str) -> None:
    """Key records are listed and shown everywhere: a secret pasted into one is refused (never echoed)."""
    found = find_secrets(value)
    if found:
        raise InvalidKeyRequest(
            f"{what} holds something shaped like a secret ({found[0].kind}); never paste a secret there, "
            "and rotate it if it was shared"
        )


def clean_owner(owner: str) -> str:
    """The owner (a person or team), at most 200 printable characters."""
    owner = owner.strip()
    if len(owner) > 200 or _CONTROL_CHARACTERS.search(owner):
        raise InvalidKeyRequest("the owner must be at most 200 printable characters, e.g. 'team-payments'")
    _refuse_secret("the owner", owner)
    return owner


def clean_project_id(project_id: str) -> str:
    """A project id: letters, digits and `_.:-`, at most 64 characters."""
    if not _PROJECT_ID.match(project_id):
        raise InvalidKeyRequest(
            "a project id is 1 to 64 letters, digits or _.:- starting with a letter or digit, e.g. 'payments'"
        )
    _refuse_secret("the project id", project_id)
    return project_id


def clean_scopes(scopes: Iterable[str]) -> list[str]:
    """Scopes such as `read`, `orders:write`, or `*` for all; duplicates removed, order kept."""
    cleaned: list[str] = []
    for scope in scopes:
        scope = scope.strip()
        _refuse_secret("a scope", scope)
        if not _SCOPE.match(scope):
            raise InvalidKeyRequest(
                f"scope {redact_text(scope[:40])!r} is not valid; use letters, digits and _.:/- (e.g. orders:read) or *"
            )
        if scope not in cleaned:
            cleaned.append(scope)
    if len(cleaned) > MAX_SCOPES:
        raise InvalidKeyRequest(f"a key can hold at most {MAX_SCOPES} scopes")
    return cleaned


def clean_quota(quota: int | None) -> int | None:
    """Requests per day, or None for unlimited."""
    if quota is None:
        return None
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise InvalidKeyRequest(
            "the quota is a whole number of requests per day (0 or more), or empty for unlimited"
        )
    return quota


def clean_ip_allowlist(cidrs: Iterable[str]) -> list[str]:
    """CIDRs (or single addresses) normalised, e.g. `10.0.0.0/8`, `2001:db8::/32`; empty = any."""
    cleaned: list[str] = []
    for cidr in cidrs:
        try:
            network = str(ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise InvalidKeyRequest(
                f"{cidr[:50]!r} is not an IP address or CIDR; write e.g. 203.0.113.7 or 10.0.0.0/8"
            ) from None
        if network not in cleaned:
            cleaned.append(network)
    if len(cleaned) > MAX_CIDRS:
        raise InvalidKeyRequest(f"an IP allowlist can hold at most {MAX_CIDRS} entries")
    return cleaned
