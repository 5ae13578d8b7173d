"""Verification and batch ingest: how services check keys and report usage over HTTP."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from keytrail.console.api.auth import INGEST, PROJECT_WRITE
from keytrail.console.api.dependencies import Caller, Runtime
from keytrail.console.api.errors import ApiError
from keytrail.console.api.models import (
    MAX_INGEST_BATCH,
    IngestBatch,
    IngestResult,
    Rejection,
    VerifyRequest,
    VerifyResponse,
)
from keytrail.keystore.ownership import scope_refusals
from keytrail.schemas.codec import MAX_EVENT_BYTES, InvalidEvent, decode_usage_event
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.settings import Settings

router = APIRouter(prefix="/v1", tags=["ingest"])
MAX_BODY_BYTES = MAX_INGEST_BATCH * MAX_EVENT_BYTES
"""The most a batch could need; the enforced limit is KEYTRAIL_MAX_REQUEST_BODY_BYTES (body_limit.py)."""


@router.post("/verify", response_model=VerifyResponse, summary="Verify a presented key (never echoed back)")
def verify(body: VerifyRequest, who: Caller, rt: Runtime) -> VerifyResponse:
    who.require(INGEST, PROJECT_WRITE)
    verdict = rt.keystore.verify(body.key, body.scope, body.client_ip)
    if verdict.project_id is not None and not who.caller().sees(verdict.project_id):
        return VerifyResponse(
            outcome=Outcome.INVALID.value, key_id=None, project_id=None, reason="no such key"
        )
    return VerifyResponse(
        outcome=verdict.outcome.value,
        key_id=verdict.key_id,
        project_id=verdict.project_id,
        reason=verdict.reason,
    )


def _check_event(index: int, raw: object, visible_project: str | None) -> KeyUsageEvent | Rejection:
    if not isinstance(raw, dict):
        return Rejection(index=index, code="schema_violation", reason="each event must be a JSON object")
    try:
        event = decode_usage_event(json.dumps(raw, separators=(",", ":")))
    except InvalidEvent as exc:
        return Rejection(index=index, code=exc.code, reason=exc.reason)
    except (TypeError, ValueError):
        return Rejection(index=index, code="schema_violation", reason="the event is not serialisable JSON")
    if visible_project is not None and event.project_id != visible_project:
        return Rejection(
            index=index,
            code="permission_denied",
            reason=f"this key may only report usage of project {visible_project!r}",
        )
    return event


def _scope_to_key_owners(
    decoded: list[tuple[int, KeyUsageEvent]], rt: Runtime, settings: Settings
) -> tuple[list[KeyUsageEvent], list[Rejection]]:
    """Writes are scoped like reads (keytrail.keystore.ownership, the worker's rule too): an event
    must name a key of its own project_id, and, where the project takes its existing keys only, a
    key the store knows. The reason never says which project another project's key belongs to."""
    if not decoded:
        return [], []
    owners = rt.keystore.projects_of(event.key_id for _, event in decoded)
    refusals = scope_refusals(
        [(event.key_id, event.project_id) for _, event in decoded], owners, settings.requires_existing_keys
    )
    refused_at = {refusal.position: refusal for refusal in refusals}
    valid = [event for position, (_, event) in enumerate(decoded) if position not in refused_at]
    rejected = [
        Rejection(index=decoded[refusal.position][0], code=refusal.code, reason=refusal.reason)
        for refusal in refusals
    ]
    return valid, rejected


@router.post(
    "/events",
    response_model=IngestResult,
    summary=f"Ingest up to {MAX_INGEST_BATCH} KeyUsageEvents; valid ones are accepted, the others listed",
    responses={
        207: {"model": IngestResult, "description": "some events were refused (listed with index and reason)"},
        413: {"description": "too many events in one batch, or a body over the size limit"},
        422: {"model": IngestResult, "description": "every event was refused (listed with index and reason)"},
    },
)
def ingest(body: IngestBatch, request: Request, response: Response, who: Caller, rt: Runtime) -> IngestResult:
    who.require(INGEST)
    if len(body.events) > MAX_INGEST_BATCH:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(body.events)} events in one batch; send at most {MAX_INGEST_BATCH} per request",
        )
    decoded: list[tuple[int, KeyUsageEvent]] = []
    rejected: list[Rejection] = []
    visible = who.visible_project()
    for index, raw in enumerate(body.events):
        checked = _check_event(index, raw, visible)
        if isinstance(checked, Rejection):
            rejected.append(checked)
        else:
            decoded.append((index, checked))
    valid, refused = _scope_to_key_owners(decoded, rt, request.app.state.settings)
    rejected = sorted(rejected + refused, key=lambda r: r.index)
    for rejection in rejected:
        rt.metrics.events_rejected.labels(rejection.code).inc()
    result = rt.ingest(valid) if valid else None
    if rejected:
        response.status_code = 207 if valid else 422
    return IngestResult(
        accepted=len(result.accepted) if result else 0,
        duplicates=result.duplicates if result else 0,
        late=len(result.late) if result else 0,
        rejected=rejected,
    )
