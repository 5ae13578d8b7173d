"""KeyTrail middleware for WSGI apps (Flask and others): verify the API key, answer 401/403 with a
JSON error, and emit one usage event per request once the response has been sent.

One line with Flask::

    protect_flask(app, verifier=LocalKeyVerifier(store), emitter=emitter, service="orders")

which wraps `app.wsgi_app` in `KeyTrailWSGIMiddleware`. The route recorded is Flask's rule
(`request.url_rule.rule`), found for refused requests by matching `app.url_map` without calling the
view. The view sees who called in `request.environ["keytrail"]` (a `KeyIdentity`). See
`keytrail.producers.key_guard` for what is recorded when a request is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl

from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.key_guard import STATUS_LINES, KeyGuard, bearer_token
from keytrail.producers.verifiers import KeyVerifier
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteResolver = Callable[[Environ], "str | None"]


ROUTE_KEY = "keytrail.route"
"""Where `protect_flask`'s hook leaves the dispatched rule (Flask clears `werkzeug.request` when the
request context ends, before the response body is closed)."""


def flask_route_resolver(app: Any) -> RouteResolver:
    """Route templates of a Flask app: the rule the request was dispatched to (remembered by
    `remember_flask_rule`), else a match of `app.url_map` without dispatching."""
    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    def resolve(environ: Environ) -> str | None:
        remembered = environ.get(ROUTE_KEY)
        if remembered is not None:
            return remembered  # type: ignore[no-any-return]
        request = environ.get("werkzeug.request")
        rule = getattr(request, "url_rule", None)
        if rule is not None:
            return str(rule.rule)
        try:
            matched, _arguments = app.url_map.bind_to_environ(environ).match(return_rule=True)
            return str(matched.rule)
        except RequestRedirect:
            return None
        except HTTPException:
            return None

    return resolve


def remember_flask_rule() -> None:
    """A `before_request` hook: note the dispatched rule in the WSGI environ for the middleware."""
    from flask import request

    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE_KEY] = rule.rule


class _AuditedBody:
    """The response iterable, counting bytes; the usage event is emitted when the server closes it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[int, bool], None]) -> None:
        self._body = body
        self._on_close = on_close
        self._sent = 0
        self._failed = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._body:
                self._sent += len(chunk)
                yield chunk
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close(self._sent, self._failed)


class KeyTrailWSGIMiddleware:
    """WSGI middleware; the options are `KeyGuard`'s plus `route_resolver` (`environ -> template | None`;
    `protect_flask` passes Flask's)."""

    def __init__(
        self,
        app: WSGIApp,
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
        self.route_resolver = route_resolver
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

    def _route(self, environ: Environ) -> str | None:
        return self.route_resolver(environ) if self.route_resolver is not None else None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        guard = self.guard
        if path in guard.public_paths:
            return self.app(environ, start_response)
        started_at, started = guard.clock()
        presented = None
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization:
            presented = bearer_token(authorization)
        if presented is None:
            presented = (environ.get("HTTP_X_API_KEY") or "").strip() or None
        if presented is None and guard.allow_query_key and environ.get("QUERY_STRING"):
            for name, value in parse_qsl(environ["QUERY_STRING"]):
                if name == guard.query_param and value:
                    presented = value
                    break
        client_ip = guard.addresses.resolve(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), environ.get("HTTP_FORWARDED")
        )
        method = environ.get("REQUEST_METHOD", "GET")
        verdict = guard.verify(presented, method, path, client_ip)
        missing = presented is None
        del presented
        length = environ.get("CONTENT_LENGTH") or ""
        request_bytes = int(length) if length.isdigit() else 0
        user_agent = environ.get("HTTP_USER_AGENT") or ""
        request_id = environ.get("HTTP_X_REQUEST_ID") or ""
        if verdict.outcome is not Outcome.OK:
            return self._refuse(
                environ,
                start_response,
                verdict,
                missing,
                started_at,
                started,
                request_bytes,
                client_ip,
                user_agent,
                request_id,
            )

        environ["keytrail"] = guard.identity(verdict)
        status_holder = [0]

        def observed_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_holder[0] = int(status.split(" ", 1)[0])
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        def finished(response_bytes: int, failed: bool) -> None:
            status = status_holder[0] or 500
            outcome = Outcome.ERROR if failed else (Outcome.RATE_LIMITED if status == 429 else Outcome.OK)
            guard.record(
                verdict,
                missing=False,
                method=method,
                route=self._route(environ),
                status=status,
                outcome=outcome,
                started_at=started_at,
                latency_ns=guard.clock()[1] - started,
                request_bytes=request_bytes,
                response_bytes=response_bytes,
                client_ip=client_ip,
                user_agent=user_agent,
                request_id=request_id,
            )

        try:
            body = self.app(environ, observed_start_response)
        except BaseException:
            status_holder[0] = status_holder[0] or 500
            finished(0, True)
            raise
        return _AuditedBody(body, finished)

    def _refuse(
        self,
        environ: Environ,
        start_response: StartResponse,
        verdict: Verification,
        missing: bool,
        started_at: float,
        started: int,
        request_bytes: int,
        client_ip: str,
        user_agent: str,
        request_id: str,
    ) -> Iterable[bytes]:
        guard = self.guard
        refusal = guard.refusal(verdict, missing)
        start_response(STATUS_LINES.get(refusal.status, f"{refusal.status} Error"), refusal.headers)
        guard.record(
            verdict,
            missing=missing,
            method=environ.get("REQUEST_METHOD", "GET"),
            route=self._route(environ),
            status=refusal.status,
            outcome=None,
            started_at=started_at,
            latency_ns=guard.clock()[1] - started,
            request_bytes=request_bytes,
            response_bytes=len(refusal.body),
            client_ip=client_ip,
            user_agent=user_agent,
            request_id=request_id,
        )
        return [refusal.body]


def protect_flask(app: Any, **options: Any) -> KeyTrailWSGIMiddleware:
    """Wrap a Flask app's `wsgi_app` in `KeyTrailWSGIMiddleware` (route templates from its URL map);
    returns the middleware. Options are `KeyTrailWSGIMiddleware`'s."""
    options.setdefault("route_resolver", flask_route_resolver(app))
    app.before_request_funcs.setdefault(None, []).insert(0, remember_flask_rule)
    middleware = KeyTrailWSGIMiddleware(app.wsgi_app, **options)
    app.wsgi_app = middleware
    return middleware
