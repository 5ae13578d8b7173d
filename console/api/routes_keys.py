"""The keys API: the key store's lifecycle over HTTP, scoped to the caller's project."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from keytrail.console.api.auth import ADMIN, PROJECT_READ, PROJECT_WRITE, Principal
from keytrail.console.api.dependencies import Caller, Runtime
from keytrail.console.api.errors import ApiError
from keytrail.console.api.models import (
    ChangeReason,
    CreateKey,
    KeyList,
    KeyView,
    KeyWithSecret,
    RenewKey,
    Rotated,
    RotateKey,
    SweepResult,
    UpdateKey,
)
from keytrail.keystore.listing import KeyFilter, KeySort
from keytrail.keystore.store import UNCHANGED
from keytrail.schemas.keys import KeyRecord, KeyStatus
from keytrail.schemas.lifecycle import KeyLifecycleEvent

router = APIRouter(prefix="/v1/keys", tags=["keys"])
KeyId = Annotated[str, Query(min_length=1, max_length=128)]


def view(record: KeyRecord) -> KeyView:
    return KeyView(**record.model_dump(), masked_key=record.masked)


def _check_granted_scopes(who: Principal, scopes: list[str] | None) -> None:
    if scopes and not who.is_admin and any(s in (ADMIN, "*") for s in scopes):
        raise ApiError(403, "permission_denied", "only an admin key may grant the admin or * scope")


@router.post(
    "", status_code=201, response_model=KeyWithSecret, summary="Create a key (the secret is shown once)"
)
def create_key(body: CreateKey, who: Caller, rt: Runtime) -> KeyWithSecret:
    who.require(PROJECT_WRITE)
    _check_granted_scopes(who, body.scopes)
    record, secret = rt.keystore.create_key(
        body.name,
        body.project_id,
        caller=who.caller(),
        owner=body.owner,
        scopes=body.scopes,
        quota=body.quota,
        ip_allowlist=body.ip_allowlist,
        expires_in=body.expires_in,
    )
    return KeyWithSecret(key=record, secret=secret, masked=record.masked)


@router.get("", response_model=KeyList, summary="List keys with filters")
def list_keys(
    who: Caller,
    rt: Runtime,
    project: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[list[KeyStatus] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    idle_days: Annotated[int | None, Query(ge=0, le=36500)] = None,
    never_used: bool = False,
    expiring_days: Annotated[int | None, Query(ge=0, le=36500)] = None,
    sort: KeySort = KeySort.CREATED,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> KeyList:
    who.require(PROJECT_READ, PROJECT_WRITE)
    filters = KeyFilter(
        project_id=project or None,
        statuses=tuple(status or ()),
        owner=owner,
        idle_days=idle_days,
        never_used=never_used,
        expiring_within_days=expiring_days,
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset,
    )
    keys = [view(r) for r in rt.keystore.list_keys(filters, caller=who.caller())]
    return KeyList(keys=keys, count=len(keys))


@router.post("/sweep", response_model=SweepResult, summary="Expire keys past their expiry now (admin)")
def sweep(who: Caller, rt: Runtime) -> SweepResult:
    who.require()
    report = rt.keystore.sweep()
    return SweepResult(expired=report.expired, grace_ended=report.grace_ended)


@router.get("/{key_id}", response_model=KeyView, summary="One key")
def get_key(key_id: str, who: Caller, rt: Runtime) -> KeyView:
    who.require(PROJECT_READ, PROJECT_WRITE)
    return view(rt.keystore.get(key_id, caller=who.caller()))


@router.get(
    "/{key_id}/events", response_model=list[KeyLifecycleEvent], summary="A key's lifecycle audit trail"
)
def key_events(key_id: str, who: Caller, rt: Runtime) -> list[KeyLifecycleEvent]:
    who.require(PROJECT_READ, PROJECT_WRITE)
    return rt.keystore.lifecycle_events(key_id, caller=who.caller())


@router.patch(
    "/{key_id}", response_model=KeyView, summary="Change name, owner, scopes, quota, allowlist, expiry"
)
def update_key(key_id: str, body: UpdateKey, who: Caller, rt: Runtime) -> KeyView:
    who.require(PROJECT_WRITE)
    _check_granted_scopes(who, body.scopes)
    if body.never_expires and body.expires_at is not None:
        raise ApiError(400, "invalid_request", "pass either expires_at or never_expires, not both")
    if body.clear_quota and body.quota is not None:
        raise ApiError(400, "invalid_request", "pass either quota or clear_quota, not both")
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise ApiError(400, "invalid_request", "expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
    expires = None if body.never_expires else (body.expires_at if body.expires_at is not None else UNCHANGED)
    quota = None if body.clear_quota else (body.quota if body.quota is not None else UNCHANGED)
    record = rt.keystore.update_key(
        key_id,
        caller=who.caller(),
        name=body.name if body.name is not None else UNCHANGED,
        owner=body.owner if body.owner is not None else UNCHANGED,
        scopes=body.scopes if body.scopes is not None else UNCHANGED,
        quota=quota,
        ip_allowlist=body.ip_allowlist if body.ip_allowlist is not None else UNCHANGED,
        expires_at=expires,
        reason=body.reason,
    )
    return view(record)


@router.post(
    "/{key_id}/rotate", response_model=Rotated, summary="Issue a successor; the old key works for `grace`"
)
def rotate_key(key_id: str, who: Caller, rt: Runtime, body: RotateKey | None = None) -> Rotated:
    who.require(PROJECT_WRITE)
    body = body or RotateKey()
    rotation = rt.keystore.rotate(
        key_id, caller=who.caller(), grace=body.grace, expires_in=body.expires_in, reason=body.reason
    )
    return Rotated(previous=view(rotation.previous), key=view(rotation.successor), secret=rotation.secret)


@router.post("/{key_id}/renew", response_model=KeyView, summary="Extend the expiry by 30 or 90 days")
def renew_key(key_id: str, who: Caller, rt: Runtime, body: RenewKey | None = None) -> KeyView:
    who.require(PROJECT_WRITE)
    body = body or RenewKey()
    return view(rt.keystore.renew(key_id, caller=who.caller(), by=body.by, reason=body.reason))


@router.post("/{key_id}/revoke", response_model=KeyView, summary="Revoke for good")
def revoke_key(key_id: str, who: Caller, rt: Runtime, body: ChangeReason | None = None) -> KeyView:
    who.require(PROJECT_WRITE)
    return view(rt.keystore.revoke(key_id, caller=who.caller(), reason=(body or ChangeReason()).reason))


@router.post("/{key_id}/disable", response_model=KeyView, summary="Stop a key until enabled again")
def disable_key(key_id: str, who: Caller, rt: Runtime, body: ChangeReason | None = None) -> KeyView:
    who.require(PROJECT_WRITE)
    return view(rt.keystore.disable(key_id, caller=who.caller(), reason=(body or ChangeReason()).reason))


@router.post("/{key_id}/enable", response_model=KeyView, summary="Let a disabled key verify again")
def enable_key(key_id: str, who: Caller, rt: Runtime, body: ChangeReason | None = None) -> KeyView:
    who.require(PROJECT_WRITE)
    return view(rt.keystore.enable(key_id, caller=who.caller(), reason=(body or ChangeReason()).reason))
