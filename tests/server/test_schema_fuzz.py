"""Schema fuzzing (issue 8): schemathesis generates requests from the service's own OpenAPI document.

Every operation gets schema-valid (positive) and schema-violating (negative) requests, in-process against the
ASGI app, from a fixed Hypothesis seed (derandomized). The service holds real objects first (an operand, a plan,
a key set, a finished job, a model), and a positive case names them instead of its generated ids half the time,
so requests reach past the 404s. Tokens vary: the owner (also the operator), another tenant, none, a wrong one.
Each answer must pass schemathesis's checks: no 5xx, a documented status code and content type, a body and
headers that match the declared schemas, and schema-violating requests refused with a 4xx. Deleting operations
run last, so they do not remove the objects the others aim at.
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)
from server_helpers import auth, seed_objects
from starlette.testclient import TestClient

from server import create_app
from server.model_archive import MODEL_MEDIA_TYPES

EXAMPLES = 25  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, negative_data_rejection]
TOKENS = {"owner": auth("alice"), "other": auth("bob"), "none": {}, "wrong": {"Authorization": "Bearer wrong"}}
WHO = ("owner", "owner", "owner", "other", "none", "wrong")  # mostly the owner: the others stop at 401/404

# Model uploads and msgpack bodies are opaque bytes to the fuzzer, like octet-stream ones.
schemathesis.serializer.alias([m for m in MODEL_MEDIA_TYPES if m != "application/octet-stream"],
                              "application/octet-stream")


def _aim(case, ids: dict[str, str]) -> None:
    """Point the case's id parameters (path and query) at the seeded objects."""
    for container in (case.path_parameters, case.query):
        for name in ids.keys() & (container or {}).keys():
            container[name] = ids[name]


def test_schema_fuzzing_finds_no_server_error(settings, matvec, model_files):
    app = create_app(settings.model_copy(update={"operators": ["alice"]}))
    counts: dict[str, dict[str, int]] = {}
    statuses: dict[int, int] = {}
    try:
        ids = seed_objects(TestClient(app, base_url="http://einfhe", headers=auth("alice")), matvec,
                           model_files=model_files)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = sorted((result.ok() for result in schema.get_all_operations()),
                            key=lambda op: op.method.upper() == "DELETE")
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode), who=st.sampled_from(WHO),
                       aimed=st.booleans())
                @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                                     suppress_health_check=list(HealthCheck))
                def fuzz(case, who, aimed):
                    if aimed and mode is GenerationMode.POSITIVE:
                        _aim(case, ids)
                    response = case.call(headers=TOKENS[who])
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    by_mode = counts.setdefault(operation.label, {})
                    by_mode[mode.value] = by_mode.get(mode.value, 0) + 1
                    case.validate_response(response, checks=CHECKS)

                try:
                    fuzz()
                except Unsatisfiable:  # an operation with nothing to negate (no parameters) has no negative cases
                    if mode is GenerationMode.POSITIVE:
                        raise
    finally:
        schemathesis.python.asgi.shutdown_lifespans()  # ends the app's lifespan, which schemathesis started
        app.state.service.close()  # idempotent: also closes it when the schema never loaded
    total = sum(sum(by_mode.values()) for by_mode in counts.values())
    print(f"\nschema fuzzing: {total} requests over {len(counts)} operations, "
          f"statuses {dict(sorted(statuses.items()))}")
    for label, by_mode in counts.items():
        print(f"  {label}: {by_mode}")
    assert len(counts) == len(operations) >= 20
    assert all(by_mode.get("positive", 0) >= EXAMPLES // 2 for by_mode in counts.values()), counts
    assert not any(status >= 500 for status in statuses)
