"""Verification and batch ingest: how services check keys and report usage over HTTP."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

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
from keytrail.schemas.codec import MAX_EVENT_BYTES, InvalidEvent, decode_usage_event
from keytrail.schemas.usage import KeyUsageEvent, Outcome

router = APIRouter(prefix="/v1", tags=["ingest"])
MAX_BODY_BYTES = MAX_INGEST_BATCH * MAX_EVENT_BYTES


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


@router.post(
    "/events",
    response_model=IngestResult,
    summary=f"Ingest up to {MAX_INGEST_BATCH} KeyUsageEvents; valid ones are accepted, the others listed",
    responses={413: {"description": "too many events in one batch"}},
)
def ingest(body: IngestBatch, request: Request, who: Caller, rt: Runtime) -> IngestResult:
    who.require(INGEST)
    if len(body.events) > MAX_INGEST_BATCH:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(body.events)} events in one batch; send at most {MAX_INGEST_BATCH} per request",
        )
    valid: list[KeyUsageEvent] = []
    rejected: list[Rejection] = []
    visible = who.visible_project()
    for index, raw in enumerate(body.events):
        checked = _check_event(index, raw, visible)
        if isinstance(checked, Rejection):
            rejected.append(checked)
            rt.metrics.events_rejected.labels(checked.code).inc()
        else:
            valid.append(checked)
    result = rt.ingest(valid) if valid else None
    return IngestResult(
        accepted=len(result.accepted) if result else 0,
        duplicates=result.duplicates if result else 0,
        late=len(result.late) if result else 0,
        rejected=rejected,
    )
