"""Read API for dashboards: canned queries, per-key time series, signals and alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder

from keytrail.console.api.auth import PROJECT_READ, PROJECT_WRITE, Principal
from keytrail.console.api.dependencies import Caller, Runtime
from keytrail.console.api.errors import ApiError
from keytrail.console.api.models import KeyUsageSeries, Rows, UsagePoint
from keytrail.keystore.listing import KeyFilter
from keytrail.sql.queries import parse_time, query_spec, query_specs, run_query

router = APIRouter(prefix="/v1", tags=["usage"])

RANGES: dict[str, tuple[timedelta, int]] = {
    "24h": (timedelta(hours=24), 3600),
    "7d": (timedelta(days=7), 6 * 3600),
    "30d": (timedelta(days=30), 86400),
}
"""Chart range -> (length, bucket seconds)."""
KEY_LIST_QUERIES = {"idle_keys", "never_used_keys"}
"""Queries that check a key list the API fills from the key store (never from the caller)."""


@cache
def console_sql(name: str) -> str:
    return (resources.files("keytrail.console.api") / "sql" / f"{name}.sql").read_text()


def _project_param(who: Principal, project: str | None) -> str:
    """The project a read is confined to ('' = every project, admins only)."""
    return who.caller().check_project_read(project or None) or ""


def _since(value: str, now: datetime) -> datetime:
    try:
        return parse_time(value, now)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"since: {exc}") from None


@router.get("/usage", summary="The canned queries and their parameters")
def list_queries(who: Caller) -> dict[str, Any]:
    who.require(PROJECT_READ, PROJECT_WRITE)
    return {"queries": [spec.describe() for spec in query_specs().values()]}


@router.get(
    "/usage/{query_name}",
    response_model=Rows,
    summary="Run a canned query; its parameters are query-string parameters (see GET /v1/usage)",
)
def usage_query(query_name: str, request: Request, who: Caller, rt: Runtime) -> Rows:
    who.require(PROJECT_READ, PROJECT_WRITE)
    spec = query_spec(query_name)
    params: dict[str, Any] = dict(request.query_params.items())
    params["project"] = _project_param(who, params.get("project"))
    if "key_id" in spec.param_by_name and params.get("key_id"):
        rt.keystore.get(params["key_id"], caller=who.caller())  # 404 outside the caller's projects
    if query_name in KEY_LIST_QUERIES:
        keys = rt.keystore.list_keys(KeyFilter(project_id=params["project"] or None), caller=who.caller())
        params["key_ids"] = [k.id for k in keys]
        params["created_ats"] = [k.created_at for k in keys]
    rows = rt.run(run_query, rt.pipeline.clickhouse, query_name, **params)
    return Rows(rows=jsonable_encoder(rows), count=len(rows))


@router.get(
    "/keys/{key_id}/usage",
    response_model=KeyUsageSeries,
    tags=["keys"],
    summary="Requests, errors and denials of one key over 24h, 7d or 30d",
)
def key_usage(
    key_id: str, who: Caller, rt: Runtime, range: Literal["24h", "7d", "30d"] = "24h"
) -> KeyUsageSeries:  # noqa: A002
    who.require(PROJECT_READ, PROJECT_WRITE)
    record = rt.keystore.get(key_id, caller=who.caller())
    length, bucket = RANGES[range]
    now = datetime.now(UTC)
    end = datetime.fromtimestamp((int(now.timestamp()) // bucket + 1) * bucket, UTC)
    start = end - length
    rows = rt.query(
        console_sql("key_usage_series"),
        {"key_id": record.id, "bucket": bucket, "since": start, "project": record.project_id},
    )
    by_time = {_parse_ch_time(row["t"]): row for row in rows}
    points = []
    moment = start
    while moment < end:
        row = by_time.get(moment, {})
        points.append(
            UsagePoint(
                t=moment,
                requests=int(row.get("requests", 0)),
                errors=int(row.get("errors", 0)),
                denials=int(row.get("denials", 0)),
            )
        )
        moment += timedelta(seconds=bucket)
    totals = {name: sum(getattr(p, name) for p in points) for name in ("requests", "errors", "denials")}
    return KeyUsageSeries(key_id=record.id, range=range, bucket_seconds=bucket, points=points, totals=totals)


def _parse_ch_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=UTC)


@router.get("/signals", response_model=Rows, summary="Anomaly, idle and expiry signals, newest first")
def signals(
    who: Caller,
    rt: Runtime,
    key_id: Annotated[str, Query(max_length=128)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    project: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str, Query(max_length=64)] = "30d",
    limit: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> Rows:
    who.require(PROJECT_READ, PROJECT_WRITE)
    scoped = _project_param(who, project)
    if key_id:
        rt.keystore.get(key_id, caller=who.caller())
    rows = rt.query(
        console_sql("signals"),
        {
            "since": _since(since, datetime.now(UTC)),
            "key_id": key_id,
            "kind": kind,
            "project": scoped,
            "limit": limit,
        },
    )
    return Rows(rows=rows, count=len(rows))


@router.get("/alerts", response_model=Rows, summary="Alerts (newest state of each), newest first")
def alerts(
    who: Caller,
    rt: Runtime,
    key_id: Annotated[str, Query(max_length=128)] = "",
    status: Literal["", "open", "acknowledged", "resolved"] = "",
    project: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str, Query(max_length=64)] = "90d",
    limit: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> Rows:
    who.require(PROJECT_READ, PROJECT_WRITE)
    scoped = _project_param(who, project)
    if key_id:
        rt.keystore.get(key_id, caller=who.caller())
    rows = rt.query(
        console_sql("alerts"),
        {
            "since": _since(since, datetime.now(UTC)),
            "key_id": key_id,
            "status": status,
            "project": scoped,
            "limit": limit,
        },
    )
    return Rows(rows=rows, count=len(rows))
