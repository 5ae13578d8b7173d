"""Feedback API: mark a signal or an alert as expected (the detector that raised it learns it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from keytrail.console.api.auth import PROJECT_WRITE
from keytrail.console.api.dependencies import Caller, Runtime
from keytrail.console.api.errors import ApiError
from keytrail.console.api.models import Reason
from keytrail.console.feedback import FeedbackError, MarkOutcome, mark_alert_expected, mark_signal_expected
from keytrail.stream_processors.alerting.engine import AlertEngine
from keytrail.stream_processors.alerting.store import ClickHouseAlertStore

router = APIRouter(prefix="/v1", tags=["feedback"])


class MarkExpected(BaseModel):
    """Why the signal was expected. Anything else in the body (a project id, a key id) is ignored:
    the project is the caller's and the key is the signal's."""

    model_config = ConfigDict(extra="ignore")

    reason: Reason = ""


def _refused(error: FeedbackError) -> ApiError:
    return ApiError(error.status, error.code, str(error))


def _hand_to_pipeline(rt: Runtime, outcome: MarkOutcome) -> None:
    """The embedded pipeline learns the marks at its next batch, without waiting for its poll."""
    source = getattr(rt.pipeline, "feedback_source", None)
    if source is not None:
        for stored in outcome.marks:
            source.notify(stored.mark)


@router.post(
    "/signals/{signal_id}/expected",
    summary="Mark a signal as expected: its detector learns it for that key; recorded in the audit trail",
    responses={404: {"description": "no such signal in the caller's projects"}},
)
def mark_signal(signal_id: str, who: Caller, rt: Runtime, body: MarkExpected | None = None) -> dict[str, Any]:
    who.require(PROJECT_WRITE)
    reason = body.reason if body is not None else ""
    try:
        # Under the pipeline lock: the mark's point in the key's event time is exact (see feedback_store).
        stored, created = rt.run(mark_signal_expected, rt.pipeline.clickhouse, rt.keystore, who.caller(),
                                 signal_id[:128], reason=reason)
    except FeedbackError as error:
        raise _refused(error) from None
    outcome = MarkOutcome([stored], [created])
    _hand_to_pipeline(rt, outcome)
    return outcome.public()


@router.post(
    "/alerts/{alert_id}/expected",
    summary="Mark an alert as expected: each of its signals teaches its detector; the alert is resolved",
    responses={404: {"description": "no such alert in the caller's projects"}},
)
def mark_alert(alert_id: str, who: Caller, rt: Runtime, body: MarkExpected | None = None) -> dict[str, Any]:
    who.require(PROJECT_WRITE)
    reason = body.reason if body is not None else ""
    engine = getattr(rt.pipeline, "alerts", None) or AlertEngine(ClickHouseAlertStore(rt.pipeline.clickhouse))
    try:
        outcome = rt.run(mark_alert_expected, rt.pipeline.clickhouse, rt.keystore, engine, who.caller(),
                         alert_id[:128], reason=reason)
    except FeedbackError as error:
        raise _refused(error) from None
    _hand_to_pipeline(rt, outcome)
    return outcome.public()
