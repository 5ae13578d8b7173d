"""FastAPI dependencies: the runtime of the app and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keytrail.console.api.auth import LOCAL_PRINCIPAL, Principal, authenticate, client_ip
from keytrail.console.api.errors import ApiError
from keytrail.console.api.runtime import ConsoleRuntime
from keytrail.schemas.usage import Outcome

bearer = HTTPBearer(auto_error=False, description="a KeyTrail key: Authorization: Bearer kt_live_…")

_FAILURES = {
    Outcome.INVALID: (401, "invalid_key"),
    Outcome.REVOKED: (401, "key_revoked"),
    Outcome.EXPIRED: (401, "key_expired"),
    Outcome.DISABLED: (401, "key_disabled"),
    Outcome.DENIED: (403, "key_denied"),
}


def runtime(request: Request) -> ConsoleRuntime:
    return request.app.state.console


def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """The caller, from its bearer key; 401/403 with a stable code otherwise (the key is never echoed)."""
    if request.app.state.no_auth:
        return LOCAL_PRINCIPAL
    token = credentials.credentials if credentials is not None else None
    found, verdict = authenticate(runtime(request).keystore, token, client_ip(request))
    if verdict.key_id is not None and verdict.project_id is not None:
        request.state.usage = (verdict.key_id, verdict.project_id, verdict.outcome)
    if found is None:
        if verdict.outcome is Outcome.ERROR:  # the key store could not decide: busy or down (fail closed)
            raise ApiError(
                503,
                "keystore_unavailable",
                f"the key could not be checked: {verdict.reason}; retry shortly",
                {"Retry-After": "1"},
            )
        if token is None:
            raise ApiError(401, "unauthenticated", verdict.reason, {"WWW-Authenticate": "Bearer"})
        status, code = _FAILURES.get(verdict.outcome, (401, "invalid_key"))
        raise ApiError(
            status, code, f"the presented key was refused: {verdict.reason}", {"WWW-Authenticate": "Bearer"}
        )
    return found


Caller = Annotated[Principal, Depends(principal)]
Runtime = Annotated[ConsoleRuntime, Depends(runtime)]
