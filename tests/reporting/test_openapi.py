"""Property-based checks of the public API against its own OpenAPI schema (schemathesis).

The app is built at import so schemathesis can read its schema while collecting;
it reads the database and broker lazily, so requests reach the test backends
that the fixtures below set up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from sqlalchemy.engine import Engine

from hotline.web import create_app

app = create_app()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)


@pytest.fixture(autouse=True)
def backends(committed: Engine, configure: Callable[..., None]) -> None:
    configure()  # drop settings cached while collecting; use the test backends


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_public_api_never_fails_or_breaks_its_schema(case: Any) -> None:
    # A schema-valid string is not always a reportable URL (private hosts, ftp:...),
    # so acceptance of every schema-valid body is not a property of this API.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_schema_documents_the_public_api(client: Any) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/reports", "/api/v1/reports/{receipt}"} <= set(spec["paths"])
    post = spec["paths"]["/api/v1/reports"]["post"]
    assert {"202", "413", "422", "429"} <= set(post["responses"])
