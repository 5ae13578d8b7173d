"""KeyTrail middleware for ASGI apps (Starlette, FastAPI): verify the API key, answer 401/403 with a
JSON error, and emit one usage event per request after the response.

One line with FastAPI/Starlette::

    app.add_middleware(KeyTrailMiddleware, verifier=LocalKeyVerifier(store), emitter=emitter, service="orders")

The route recorded is the template (`scope["route"].path` after routing; for refused requests,
and for plain Starlette routes, the router is matched without calling the endpoint). The app sees
who called in `request.state.keytrail` (a `KeyIdentity`). See `keytrail.producers.key_guard` for what is
recorded when a request is refused.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.key_guard import KeyGuard, bearer_token
from keytrail.producers.verifiers import KeyVerifier
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteResolver = Callable[[Scope], "str | None"]

_AUTHORIZATION = b"authorization"
_API_KEY = b"x-api-key"
_FORWARDED_FOR = b"x-forwarded-for"
_FORWARDED = b"forwarded"
_USER_AGENT = b"user-agent"
_REQUEST_ID = b"x-request-id"
_CONTENT_LENGTH = b"content-length"
_WANTED = frozenset(
    {_AUTHORIZATION, _API_KEY, _FORWARDED_FOR, _FORWARDED, _USER_AGENT, _REQUEST_ID, _CONTENT_LENGTH}
)


class _Exchange:
    """What the middleware observes of one response."""

    __slots__ = ("status", "response_bytes", "request_bytes", "ended")

    def __init__(self, request_bytes: int) -> None:
        self.status = 0
        self.response_bytes = 0
        self.request_bytes = request_bytes
        self.ended = 0


class StarletteRoutes:
    """Route templates by matching a Starlette router without dispatching (mounts included)."""

    def __init__(self, router: Any, max_cached: int = 10_000) -> None:
        self.router = router
        self.max_cached = max_cached
        self._by_endpoint: dict[Any, str] | None = None
        self._cache: dict[tuple[str, str], str | None] = {}

    def __call__(self, scope: Scope) -> str | None:
        cache_key = (scope.get("method", ""), scope.get("path", ""))
        if cache_key in self._cache:
            return self._cache[cache_key]
        template = self._match(self.router.routes, dict(scope), "")
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[cache_key] = template
        return template

    def for_endpoint(self, endpoint: Any) -> str | None:
        """The template of a top-level route by its endpoint (unique endpoints only)."""
        if self._by_endpoint is None:
            counts: dict[Any, int] = {}
            paths: dict[Any, str] = {}
            for route in self.router.routes:
                target = getattr(route, "endpoint", None)
                if target is not None and isinstance(getattr(route, "path", None), str):
                    counts[target] = counts.get(target, 0) + 1
                    paths[target] = route.path
            self._by_endpoint = {e: p for e, p in paths.items() if counts[e] == 1}
        return self._by_endpoint.get(endpoint)

    def _match(self, routes: Iterable[Any], scope: dict[str, Any], prefix: str) -> str | None:
        from starlette.routing import Match, Mount

        partial: str | None = None
        for route in routes:
            try:
                match, child = route.matches(scope)
            except Exception:  # noqa: BLE001 - a route that cannot match this request
                continue
            if match == Match.NONE:
                continue
            if isinstance(route, Mount):
                inner = self._match(route.routes or (), {**scope, **child}, prefix + route.path)
                template = inner or prefix + route.path
            else:
                template = prefix + route.path
            if match == Match.FULL:
                return template
            partial = partial or template
        return partial


def _find_router(app: Any) -> Any | None:
    """The Starlette router under the middleware stack (following `.app`)."""
    node = app
    for _ in range(32):
        if node is None:
            return None
        if isinstance(getattr(node, "routes", None), list):
            return node
        node = getattr(node, "app", None)
    return None


class KeyTrailMiddleware:
    """ASGI middleware; the options are `KeyGuard`'s plus `route_resolver` (a callable
    `scope -> template | None`, for non-Starlette apps; Starlette routers are found automatically)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: KeyVerifier,
        emitter: UsageEmitter,
        service: str,
        project_id: str = "unknown",
        scope: str | Callable[[str, str], str | None] | None = None,
        trusted_proxies: Iterable[str] | None = None,
        allow_query_key: bool = False,
        query_param: str = "api_key",
        public_paths: Iterable[str] = (),
        route_resolver: RouteResolver | None = None,
    ) -> None:
        self.app = app
        self.guard = KeyGuard(
            verifier,
            emitter,
            service=service,
            project_id=project_id,
            scope=scope,
            trusted_proxies=trusted_proxies,
            allow_query_key=allow_query_key,
            query_param=query_param,
            public_paths=public_paths,
        )
        self._route_resolver = route_resolver
        self._routes: StarletteRoutes | None = None
        self._looked_for_router = False

    def _resolver(self) -> RouteResolver | None:
        if self._route_resolver is not None:
            return self._route_resolver
        if not self._looked_for_router:
            self._looked_for_router = True
            router = _find_router(self.app)
            if router is not None:
                self._routes = StarletteRoutes(router)
        return self._routes

    def _route_of(self, scope: Scope, root_path: str) -> str | None:
        """The template of a dispatched request."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str) and scope.get("root_path", "") == root_path:
            return path
        resolver = self._resolver()
        if resolver is None:
            return None
        if self._routes is not None and resolver is self._routes and "endpoint" in scope:
            template = self._routes.for_endpoint(scope["endpoint"])
            if template is not None and scope.get("root_path", "") == root_path:
                return template
        return resolver({**scope, "root_path": root_path})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.guard.public_paths:
            await self.app(scope, receive, send)
            return
        guard = self.guard
        started_at, started = time.time(), time.perf_counter_ns()
        authorization = api_key = forwarded_for = forwarded = user_agent = request_id = None
        content_length = -1
        for name, value in scope["headers"]:
            if name in _WANTED:
                if name == _AUTHORIZATION:
                    authorization = value.decode("latin-1")
                elif name == _API_KEY:
                    api_key = value.decode("latin-1")
                elif name == _FORWARDED_FOR:
                    forwarded_for = value.decode("latin-1")
                elif name == _FORWARDED:
                    forwarded = value.decode("latin-1")
                elif name == _USER_AGENT:
                    user_agent = value.decode("latin-1")
                elif name == _REQUEST_ID:
                    request_id = value.decode("latin-1")
                elif value.isdigit():
                    content_length = int(value)
        presented = bearer_token(authorization) if authorization else None
        if presented is None and api_key:
            presented = api_key.strip() or None
        if presented is None and guard.allow_query_key and scope.get("query_string"):
            for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
                if name == guard.query_param and value:
                    presented = value
                    break
        client = scope.get("client")
        client_ip = guard.addresses.resolve(client[0] if client else None, forwarded_for, forwarded)
        method = scope["method"]
        if guard.verifies_async:
            verdict = await guard.averify(presented, method, scope["path"], client_ip)
        else:
            verdict = guard.verify(presented, method, scope["path"], client_ip)
        missing = presented is None
        del presented
        if verdict.outcome is not Outcome.OK:
            await self._refuse(
                scope,
                send,
                verdict,
                missing,
                started_at,
                started,
                content_length,
                client_ip,
                user_agent,
                request_id,
            )
            return

        exchange = _Exchange(max(content_length, 0))
        scope.setdefault("state", {})["keytrail"] = guard.identity(verdict)
        root_path = scope.get("root_path", "")

        async def observed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                exchange.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.ended = time.perf_counter_ns()
            elif kind == "http.response.start":
                exchange.status = message["status"]
            await send(message)

        observed_receive = receive
        if content_length < 0:

            async def observed_receive() -> Message:  # type: ignore[misc]
                message = await receive()
                if message["type"] == "http.request":
                    exchange.request_bytes += len(message.get("body", b""))
                return message

        outcome: Outcome | None = None
        try:
            await self.app(scope, observed_receive, observed_send)
        except BaseException:
            outcome = Outcome.ERROR
            if not exchange.status:
                exchange.status = 500
            raise
        finally:
            if outcome is None and exchange.status == 429:
                outcome = Outcome.RATE_LIMITED
            guard.record(
                verdict,
                missing=False,
                method=method,
                route=self._route_of(scope, root_path),
                status=exchange.status,
                outcome=outcome or Outcome.OK,
                started_at=started_at,
                latency_ns=(exchange.ended or time.perf_counter_ns()) - started,
                request_bytes=exchange.request_bytes,
                response_bytes=exchange.response_bytes,
                client_ip=client_ip,
                user_agent=user_agent or "",
                request_id=request_id or "",
            )

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        verdict: Verification,
        missing: bool,
        started_at: float,
        started: int,
        content_length: int,
        client_ip: str,
        user_agent: str | None,
        request_id: str | None,
    ) -> None:
        guard = self.guard
        refusal = guard.refusal(verdict, missing)
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [(k.encode(), v.encode()) for k, v in refusal.headers],
            }
        )
        await send({"type": "http.response.body", "body": refusal.body})
        resolver = self._resolver()
        guard.record(
            verdict,
            missing=missing,
            method=scope["method"],
            route=resolver(scope) if resolver is not None else None,
            status=refusal.status,
            outcome=None,
            started_at=started_at,
            latency_ns=guard.clock()[1] - started,
            request_bytes=max(content_length, 0),
            response_bytes=len(refusal.body),
            client_ip=client_ip,
            user_agent=user_agent or "",
            request_id=request_id or "",
        )
