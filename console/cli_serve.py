"""`keytrail serve`: the HTTP API, the ingest endpoint and the dashboard in one process."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

import typer

from keytrail.settings import get_settings

_DEFAULT = urlparse(get_settings().api_url)


def serve(
    host: Annotated[
        str, typer.Option(help="address to listen on (from KEYTRAIL_API_URL)")
    ] = _DEFAULT.hostname or "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="port to listen on (from KEYTRAIL_API_URL)")
    ] = _DEFAULT.port or 8477,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="LOCAL DEVELOPMENT ONLY: every request acts as an admin")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the console (API, ingest, dashboard); in the embedded default it owns chDB and the key store."""
    import uvicorn

    from keytrail.console.api import create_app
    from keytrail.keystore.errors import KeyStoreError
    from keytrail.keystore.store import KeyStore

    settings = get_settings()
    try:  # a corrupt or locked key store is one line here, not a traceback from the app's lifespan
        KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env).close()
    except KeyStoreError as error:
        typer.echo(f"keytrail serve: error: {error.message}", err=True)
        raise typer.Exit(2) from None
    app = create_app(settings, no_auth=no_auth)
    # proxy_headers=False: uvicorn would otherwise rewrite the peer from X-Forwarded-For sent by any
    # client on 127.0.0.1; the app itself believes forwarding headers only from KEYTRAIL_TRUSTED_PROXIES.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, proxy_headers=False)
