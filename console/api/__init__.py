"""The console's HTTP API (FastAPI) and the dashboard it serves."""

from keytrail.console.api.app import create_app

__all__ = ["create_app"]
