"""The OpenAPI schema: valid without warnings, and the API honours it. schemathesis generates
requests from /api/schema/ (valid and invalid bodies, query strings, headers, path parameters)
and sends them as a board member and as an agent, one operation at a time and as stateful
sequences that follow the links it infers (a created company's id into the company routes...);
no response may be a 5xx, undocumented, or differ from its documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.management import call_command
from django.db import transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from heartbeat.models import HeartbeatRun
from issues.models import IssueComment
from tests.factories import make_issue, make_run

pytestmark = pytest.mark.django_db

# Examples per operation and actor: enough to hit every field's edge cases, bounded so the
# whole run stays within a few seconds per operation.
EXAMPLES_PER_OPERATION = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_schema_generation_is_valid_without_warnings(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert (tmp_path / "schema.yml").read_text().startswith("openapi: 3")


def test_schema_and_docs_are_public(anonymous):
    assert anonymous.get("/api/schema/").status_code == 200
    assert anonymous.get("/api/docs/").status_code == 200


def _real_path_parameters(side) -> dict[str, str]:
    """Most generated requests address real objects, so they reach the handlers' logic."""
    issue = make_issue(side.company, status="todo", assignee_agent_id=side.agent.id)
    run = make_run(
        side.agent, status=HeartbeatRun.Status.RUNNING, context_snapshot={"issueId": str(issue.id)}
    )
    comment = IssueComment.objects.create(company=side.company, issue=issue, body="hello")
    return {
        "company_id": str(side.company.id),
        "agent_id": str(side.agent.id),
        "issue_ref": str(issue.id),
        "run_id": str(run.id),
        "comment_id": str(comment.id),
        "key_id": str(side.agent.api_keys.first().id),
    }


def _fuzz(operation, real: dict[str, str], auth_headers: dict[str, str]) -> str | None:
    """Send generated requests for one operation; the first failure's report, or None."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(GenerationMode.POSITIVE)
        | operation.as_strategy(GenerationMode.NEGATIVE),
        generated_path=st.booleans(),
    )
    def exercise(case, generated_path):
        # Half the requests keep their generated (possibly malformed) path parameters.
        for name in case.path_parameters or {}:
            if name in real and not generated_path:
                case.path_parameters[name] = real[name]
        headers = {**(case.headers or {}), **auth_headers}
        # A generated run header names no run of this agent; the 403 for that has its own
        # test, and here it would hide every other behaviour.
        headers.pop("X-Paperclip-Run-Id", None)
        case.headers = headers
        case.call_and_validate(checks=CHECKS)

    try:
        exercise()
    except Exception as exc:  # every failing operation is reported, not only the first
        return f"{operation.label}: {exc}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("actor", ["board", "agent_client"])
def test_api_conforms_to_its_schema(side_a, actor, wsgi_app):
    auth_headers = {"Authorization": f"Bearer {getattr(side_a, actor).bearer_secret}"}
    real = _real_path_parameters(side_a)
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    failures = [
        failure
        for operation in operations
        if (failure := _fuzz(operation, real, auth_headers)) is not None
    ]
    assert not failures, "\n\n".join(failures[:10])


def test_openapi_json_is_the_schema_as_json(side_a):
    response = side_a.board.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/api/issues/{issue_ref}/activity" in document["paths"]


# Stateful sequences: enough scenarios to walk the links from the creating routes (companies,
# agents, issues, comments, keys, tokens) into the routes that use what they created.
STATEFUL_SCENARIOS = 40
STATEFUL_STEPS = 8


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("actor", ["board", "agent_client"])
def test_api_sequences_following_schema_links_conform(side_a, actor, wsgi_app):
    auth_headers = {"Authorization": f"Bearer {getattr(side_a, actor).bearer_secret}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    base = schema.as_state_machine()
    assert schema.statistic.transitions.total > 100
    failures: list[str] = []
    responses: list[int] = []

    class Sequences(base):
        # Each scenario starts from the same database: Hypothesis replays choices it already
        # made, and a company created by an earlier scenario would change what they lead to.
        def setup(self):
            self.savepoint = transaction.savepoint()

        def teardown(self):
            transaction.savepoint_rollback(self.savepoint)

        def get_call_kwargs(self, case):
            return {"headers": auth_headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # Collected rather than raised: Hypothesis would replay a failing sequence against
            # a database the sequence already changed, which it reports as flaky generation.
            responses.append(response.status_code)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                failures.append(f"{case.operation.label}: {exc}")

    Sequences.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
    assert len(responses) > STATEFUL_SCENARIOS
    assert not failures, "\n\n".join(failures[:10])
