"""The console app: keys API, verify, ingest, read API, health, metrics and the dashboard."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keytrail.console.api import routes_ingest, routes_keys, routes_read
from keytrail.console.api.auth import bootstrap_admin_key, client_ip
from keytrail.console.api.errors import install_error_handlers
from keytrail.console.api.models import Health
from keytrail.console.api.runtime import ConsoleRuntime
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.schemas.usage import Outcome
from keytrail.settings import Settings

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

    @app.get("/healthz", response_model=Health, tags=["ops"], summary="Liveness")
    def healthz() -> Health:
        return Health(status="ok", mode=settings.mode.value)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics(request: Request) -> Response:
        runtime: ConsoleRuntime = request.app.state.console
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=DASHBOARD / "static"), name="static")
    return app


def _outcome_of(status: int) -> Outcome:
    if status >= 500:
        return Outcome.ERROR
    if status in (401, 403):
        return Outcome.DENIED
    return Outcome.OK
