"""The console app: keys API, verify, ingest, read API, health, metrics and the dashboard."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keytrail.console.api import routes_feedback, routes_ingest, routes_keys, routes_read
from keytrail.console.api.auth import bootstrap_admin_key, client_ip
from keytrail.console.api.body_limit import BodyLimit
from keytrail.console.api.errors import install_error_handlers
from keytrail.console.api.models import Health, Readiness
from keytrail.console.api.runtime import WEDGED_AFTER_SECONDS, ConsoleRuntime, PipelineBusy
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.keystore.errors import KeyStoreBusy
from keytrail.schemas.usage import Outcome
from keytrail.settings import RunMode, Settings

log = logging.getLogger(__name__)

DASHBOARD = Path(str(resources.files("keytrail.console") / "dashboard"))


def create_app(
    settings: Settings,
    *,
    pipeline: EmbeddedPipeline | None = None,
    no_auth: bool = False,
    bootstrap_admin: bool = True,
    sweep_interval_seconds: float = 3600.0,
    usage_flush_seconds: float = 0.5,
) -> FastAPI:
    """The console app. Without `pipeline`, the app opens (and closes) its own EmbeddedPipeline in
    its lifespan: chDB allows one process per data directory, so the server is its one owner.

    `no_auth=True` is for local development only: every request acts as an admin.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pipeline is None
        runtime = ConsoleRuntime(
            pipeline or EmbeddedPipeline(settings),
            owns_pipeline=owned,
            flush_seconds=usage_flush_seconds,
            sweep_seconds=sweep_interval_seconds,
        )
        app.state.console = runtime
        app.state.bootstrap_admin_key = (
            bootstrap_admin_key(runtime.keystore, settings.data_dir)
            if bootstrap_admin and not no_auth
            else None
        )
        if no_auth:
            log.warning("KeyTrail console running WITHOUT AUTHENTICATION (--no-auth): local development only")
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="KeyTrail console API",
        version="1",
        summary="Manage API keys, verify them, ingest their usage and read their audit trail.",
        description=(
            "Authenticate with a KeyTrail key: `Authorization: Bearer kt_live_…`. Scopes: `admin`, "
            "`project:write`, `project:read`, `ingest`. A project-scoped key sees its own project only. "
            'Errors are `{"error": {"code": ..., "message": ...}}` with stable codes.'
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.no_auth = no_auth
    install_error_handlers(app)
    app.include_router(routes_keys.router)
    app.include_router(routes_read.router)
    app.include_router(routes_ingest.router)
    app.include_router(routes_feedback.router)

    @app.middleware("http")
    async def record_usage(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        runtime: ConsoleRuntime | None = getattr(request.app.state, "console", None)
        if runtime is not None and template.startswith("/v1/"):
            runtime.metrics.requests.labels(request.method, template, str(response.status_code)).inc()
            usage = getattr(request.state, "usage", None)
            if usage is not None:
                key_id, project_id, outcome = usage
                if outcome is Outcome.OK:
                    outcome = _outcome_of(response.status_code)
                runtime.record_request(
                    key_id=key_id,
                    project_id=project_id,
                    method=request.method,
                    route=template,
                    status=response.status_code,
                    outcome=outcome,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    client_ip=client_ip(request),
                    user_agent=request.headers.get("user-agent", ""),
                    request_id=request.headers.get("x-request-id", ""),
                )
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.max_request_body_bytes)  # outermost: before any read

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["ops"],
        summary="Liveness: the process answers and its pipeline is not wedged",
        responses={503: {"model": Health, "description": "the pipeline has been held without a break too long"}},
    )
    def healthz(request: Request) -> Response:
        runtime: ConsoleRuntime | None = getattr(request.app.state, "console", None)
        held = runtime.held_seconds() if runtime is not None else 0.0
        if held > WEDGED_AFTER_SECONDS:
            body = Health(status="wedged", mode=settings.mode.value,
                          detail=f"the pipeline has been held for {held:.0f} s without a break")
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(Health(status="ok", mode=settings.mode.value).model_dump())

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["ops"],
        summary="Readiness: the key store, ClickHouse and (in production) Kafka answer now",
        responses={503: {"model": Readiness, "description": "a dependency does not answer; see checks"}},
    )
    def readyz(request: Request) -> Response:
        runtime: ConsoleRuntime = request.app.state.console
        checks = {
            "keystore": _check(runtime.keystore.check_ready),
            "clickhouse": _check(lambda: runtime.query("SELECT 1")),
            "kafka": _check_kafka(settings) if settings.mode is RunMode.PRODUCTION else "not used (embedded)",
        }
        ready = all(value == "ok" or value.startswith("not used") for value in checks.values())
        body = Readiness(status="ready" if ready else "not_ready", mode=settings.mode.value, checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503,
                            headers=None if ready else {"Retry-After": "2"})

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics(request: Request) -> Response:
        runtime: ConsoleRuntime = request.app.state.console
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=DASHBOARD / "static"), name="static")
    return app


def _check(probe: Callable[[], object]) -> str:
    """'ok', or one line saying what is wrong (never a traceback, never a connection secret)."""
    try:
        probe()
    except KeyStoreBusy:
        return "busy: the key store is locked by another process"
    except PipelineBusy:
        return "busy: the embedded pipeline is held (a long ingest, or a locked key store)"
    except Exception as error:  # noqa: BLE001 - readiness reports, it does not raise
        return f"error: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return "ok"


def _check_kafka(settings: Settings) -> str:
    def probe() -> None:
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0}).list_topics(timeout=1.5)

    return _check(probe)


def _outcome_of(status: int) -> Outcome:
    if status >= 500:
        return Outcome.ERROR
    if status in (401, 403):
        return Outcome.DENIED
    return Outcome.OK
