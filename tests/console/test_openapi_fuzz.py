"""Schemathesis against the console's OpenAPI spec: no generated request makes the server fail (5xx).

Bounded: a few examples per operation, on a real embedded pipeline in its own data dir.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from keytrail.console.api import create_app
from keytrail.console.embedded import EmbeddedPipeline
from keytrail.settings import Settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

pytestmark = pytest.mark.slow


def test_no_generated_request_causes_a_server_error(tmp_path_factory):
    from fastapi.testclient import TestClient
    from hypothesis import given

    config = Settings(data_dir=tmp_path_factory.mktemp("fuzz"))
    pipeline = EmbeddedPipeline(config)
    failures: list[str] = []
    statuses: list[int] = []
    try:
        app = create_app(config, pipeline=pipeline, usage_flush_seconds=60)
        with TestClient(app):  # runs the lifespan: the app's runtime and bootstrap admin key
            auth = {"Authorization": f"Bearer {app.state.bootstrap_admin_key}"}
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            operations = [result.ok() for result in schema.get_all_operations()]
            assert len(operations) >= 18

            for operation in operations:

                @given(case=operation.as_strategy())
                @settings(
                    max_examples=8,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    derandomize=True,
                    database=None,
                )
                def check(case) -> None:
                    response = case.call(headers=dict(auth))
                    statuses.append(response.status_code)
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
                        )

                check()
    finally:
        pipeline.close()
    assert len(statuses) >= 3 * len(operations), "schemathesis generated too few requests"
    assert any(code < 300 for code in statuses), (
        "no generated request succeeded: the runs did not reach the handlers"
    )
    assert not failures, "\n".join(failures)
