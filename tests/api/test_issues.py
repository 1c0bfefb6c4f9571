"""Issues and comments: create, list, read, update side effects, checkout/release locks."""

from __future__ import annotations

import pytest

from heartbeat.models import HeartbeatRun
from issues.models import Issue, IssueComment
from issues.signals import issue_wake_requested
from paperclip.models import ActivityLog
from tests.api.conftest import agent_client_for
from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db

RUNNING = HeartbeatRun.Status.RUNNING


@pytest.fixture
def wakes():
    """The assignee wakes requested (after commit) during the test."""
    received = []

    def record(sender, **kwargs):
        received.append(kwargs)

    issue_wake_requested.connect(record)
    yield received
    issue_wake_requested.disconnect(record)


def test_board_creates_an_issue_with_the_next_identifier(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/issues",
        {"title": "Ship it", "priority": "high"},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["identifier"] == f"{side_a.company.issue_prefix}-1"
    assert (body["status"], body["priority"]) == ("backlog", "high")
    assert body["createdByUserId"] == str(side_a.user.pk)


def test_agent_creates_an_issue_in_its_company(side_a):
    response = side_a.agent_client.post(
        f"/api/companies/{side_a.company.id}/issues", {"title": "Subtask"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["createdByAgentId"] == str(side_a.agent.id)


def test_assignee_from_another_company_answers_400_naming_the_field(side_a, side_b):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/issues",
        {"title": "x", "assigneeAgentId": str(side_b.agent.id)},
        format="json",
    )
    assert response.status_code == 400
    assert "assigneeAgentId" in response.json()["details"]


def test_in_progress_without_assignee_answers_422(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/issues",
        {"title": "x", "status": "in_progress"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"] == "An in_progress issue needs an assignee"


def test_two_assignees_answer_422(side_a):
    response = side_a.board.post(
        f"/api/companies/{side_a.company.id}/issues",
        {"title": "x", "assigneeAgentId": str(side_a.agent.id), "assigneeUserId": "u1"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"] == "Issue can only have one assignee"


def test_creating_an_assigned_todo_issue_wakes_the_assignee(
    side_a, wakes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = side_a.board.post(
            f"/api/companies/{side_a.company.id}/issues",
            {"title": "x", "status": "todo", "assigneeAgentId": str(side_a.agent.id)},
            format="json",
        )
    assert response.status_code == 201
    assert len(wakes) == 1
    assert wakes[0]["agent_id"] == side_a.agent.id
    assert wakes[0]["reason"] == "issue_assigned"
    assert wakes[0]["payload"] == {"issueId": response.json()["id"], "mutation": "create"}


def test_creating_an_assigned_backlog_issue_wakes_nobody(
    side_a, wakes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        side_a.board.post(
            f"/api/companies/{side_a.company.id}/issues",
            {"title": "x", "assigneeAgentId": str(side_a.agent.id)},
            format="json",
        )
    assert wakes == []


def test_list_filters_by_comma_separated_statuses_and_assignee(side_a):
    todo = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    make_issue(side_a.company, status="todo")
    blocked = make_issue(side_a.company, status="blocked", assignee_agent_id=side_a.agent.id)
    make_issue(side_a.company, status="done", assignee_agent_id=side_a.agent.id)
    response = side_a.board.get(
        f"/api/companies/{side_a.company.id}/issues",
        {"status": "todo,blocked", "assigneeAgentId": str(side_a.agent.id)},
    )
    assert response.status_code == 200
    assert {row["id"] for row in response.json()} == {str(todo.id), str(blocked.id)}


def test_list_searches_titles(side_a):
    wanted = make_issue(side_a.company, title="Fix the flaky reaper test")
    make_issue(side_a.company, title="Write docs")
    response = side_a.board.get(f"/api/companies/{side_a.company.id}/issues", {"q": "flaky"})
    assert [row["id"] for row in response.json()] == [str(wanted.id)]


def test_unknown_status_filter_answers_400(side_a):
    response = side_a.board.get(
        f"/api/companies/{side_a.company.id}/issues", {"status": "todo,nope"}
    )
    assert response.status_code == 400
    assert "status" in response.json()["details"]


def test_issue_is_readable_by_identifier(side_a):
    issue = make_issue(side_a.company)
    response = side_a.agent_client.get(f"/api/issues/{issue.identifier.lower()}")
    assert response.status_code == 200
    assert response.json()["id"] == str(issue.id)


def test_marking_done_releases_run_locks_and_stamps_completion(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(
        side_a.company,
        status="in_progress",
        assignee_agent_id=side_a.agent.id,
    )
    Issue.objects.filter(pk=issue.pk).update(
        checkout_run=run, execution_run=run, execution_agent_name_key="x"
    )
    response = side_a.board.patch(f"/api/issues/{issue.id}", {"status": "done"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["checkoutRunId"], body["executionRunId"]) == (None, None)
    assert body["executionAgentNameKey"] is None
    assert body["completedAt"] is not None


def test_changing_the_assignee_releases_run_locks(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    other = make_agent(side_a.company)
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    Issue.objects.filter(pk=issue.pk).update(execution_run=run)
    response = side_a.board.patch(
        f"/api/issues/{issue.id}", {"assigneeAgentId": str(other.id)}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["assigneeAgentId"] == str(other.id)
    assert response.json()["executionRunId"] is None


def test_patch_to_in_progress_without_assignee_answers_422_and_changes_nothing(side_a):
    issue = make_issue(side_a.company, status="todo", title="Before")
    response = side_a.board.patch(
        f"/api/issues/{issue.id}", {"status": "in_progress", "title": "After"}, format="json"
    )
    assert response.status_code == 422
    issue.refresh_from_db()
    assert (issue.status, issue.title) == ("todo", "Before")


def test_patch_posts_its_comment_in_the_same_transaction(side_a):
    issue = make_issue(side_a.company, status="todo")
    response = side_a.board.patch(
        f"/api/issues/{issue.id}", {"status": "blocked", "comment": "Waiting on CI"}, format="json"
    )
    assert response.status_code == 200
    comment = IssueComment.objects.get(issue=issue)
    assert (comment.body, comment.author_user_id) == ("Waiting on CI", str(side_a.user.pk))


def test_patch_with_a_comment_leaves_the_issue_as_new_as_its_comment(side_a):
    issue = make_issue(side_a.company, status="todo")
    response = side_a.board.patch(
        f"/api/issues/{issue.id}", {"status": "blocked", "comment": "Waiting on CI"}, format="json"
    )
    comment = IssueComment.objects.get(issue=issue)
    issue.refresh_from_db()
    assert issue.updated_at == comment.created_at
    assert (
        response.json()["updatedAt"]
        == side_a.board.get(f"/api/issues/{issue.id}").json()["updatedAt"]
    )


def test_assigning_an_agent_to_a_todo_issue_wakes_it(
    side_a, wakes, django_capture_on_commit_callbacks
):
    issue = make_issue(side_a.company, status="todo")
    with django_capture_on_commit_callbacks(execute=True):
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"assigneeAgentId": str(side_a.agent.id)}, format="json"
        )
    assert [(w["agent_id"], w["reason"]) for w in wakes] == [(side_a.agent.id, "issue_assigned")]


def test_agent_patching_its_issue_held_by_another_live_run_gets_409(side_a):
    holder = make_run(side_a.agent, status=RUNNING)
    mine = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="in_progress", assignee_agent_id=side_a.agent.id)
    Issue.objects.filter(pk=issue.pk).update(checkout_run=holder)
    client = agent_client_for(side_a.agent, run_id=mine.id)
    response = client.patch(f"/api/issues/{issue.id}", {"status": "done"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "Issue run ownership conflict"
    assert response.json()["details"]["checkoutRunId"] == str(holder.id)
    assert response.json()["details"]["checkoutRunActive"] is True


def test_agent_adopts_the_checkout_of_a_run_that_ended(side_a):
    dead = make_run(side_a.agent, status=HeartbeatRun.Status.FAILED)
    mine = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="in_progress", assignee_agent_id=side_a.agent.id)
    Issue.objects.filter(pk=issue.pk).update(checkout_run=dead)
    client = agent_client_for(side_a.agent, run_id=mine.id)
    response = client.patch(f"/api/issues/{issue.id}", {"priority": "high"}, format="json")
    assert response.status_code == 200
    assert response.json()["checkoutRunId"] == str(mine.id)


def test_board_deletes_an_issue(side_a):
    issue = make_issue(side_a.company)
    IssueComment.objects.create(company=side_a.company, issue=issue, body="x")
    assert side_a.board.delete(f"/api/issues/{issue.id}").status_code == 204
    assert not Issue.objects.filter(pk=issue.pk).exists()


def test_agents_cannot_delete_issues(side_a):
    issue = make_issue(side_a.company)
    assert side_a.agent_client.delete(f"/api/issues/{issue.id}").status_code == 403
    assert Issue.objects.filter(pk=issue.pk).exists()


def test_deleting_an_issue_with_an_active_run_answers_409(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company)
    Issue.objects.filter(pk=issue.pk).update(execution_run=run)
    assert side_a.board.delete(f"/api/issues/{issue.id}").status_code == 409


# Checkout and release


def test_agent_checks_out_an_issue_with_its_run(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(
        f"/api/issues/{issue.id}/checkout",
        {"agentId": str(side_a.agent.id), "expectedStatuses": ["todo"]},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "in_progress"
    assert body["checkoutRunId"] == body["executionRunId"] == str(run.id)
    assert body["executionAgentNameKey"] == side_a.agent.name.lower()
    assert body["startedAt"] is not None


def test_checkout_records_the_agent_and_its_run_in_the_activity_log(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    client = agent_client_for(side_a.agent, run_id=run.id)
    client.post(
        f"/api/issues/{issue.id}/checkout",
        {"agentId": str(side_a.agent.id), "expectedStatuses": ["todo"]},
        format="json",
    )
    row = ActivityLog.objects.get(action="issue.checked_out", entity_id=issue.id)
    assert (row.agent_id, row.run_id, row.entity_type) == (side_a.agent.id, run.id, "issue")
    assert row.details == {"identifier": issue.identifier, "previousStatus": "todo"}


def test_checkout_again_with_the_same_run_is_a_no_op(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="todo")
    client = agent_client_for(side_a.agent, run_id=run.id)
    url = f"/api/issues/{issue.id}/checkout"
    first = client.post(url, {"expectedStatuses": ["todo"]}, format="json")
    second = client.post(url, {"expectedStatuses": ["todo"]}, format="json")
    assert first.status_code == second.status_code == 200
    assert second.json()["checkoutRunId"] == str(run.id)


def test_agent_checkout_without_a_run_answers_401(side_a):
    issue = make_issue(side_a.company, status="todo")
    response = side_a.agent_client.post(
        f"/api/issues/{issue.id}/checkout", {"expectedStatuses": ["todo"]}, format="json"
    )
    assert response.status_code == 401
    assert "run id required" in response.json()["error"]


def test_agent_cannot_check_out_as_another_agent(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    other = make_agent(side_a.company)
    issue = make_issue(side_a.company, status="todo")
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(
        f"/api/issues/{issue.id}/checkout",
        {"agentId": str(other.id), "expectedStatuses": ["todo"]},
        format="json",
    )
    assert response.status_code == 403


def test_checkout_of_an_issue_held_by_a_live_run_answers_409_with_the_holder(side_a):
    other = make_agent(side_a.company)
    holder = make_run(other, status=RUNNING)
    issue = make_issue(side_a.company, status="in_progress", assignee_agent_id=other.id)
    Issue.objects.filter(pk=issue.pk).update(checkout_run=holder, execution_run=holder)
    run = make_run(side_a.agent, status=RUNNING)
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(
        f"/api/issues/{issue.id}/checkout", {"expectedStatuses": ["todo"]}, format="json"
    )
    assert response.status_code == 409
    details = response.json()["details"]
    assert response.json()["error"] == "Issue checkout conflict"
    assert details["assigneeAgentId"] == str(other.id)
    assert details["executionRunId"] == str(holder.id)
    assert (details["executionRunStatus"], details["executionRunActive"]) == ("running", True)


def test_checkout_clears_the_lock_of_a_run_that_ended(side_a):
    dead = make_run(side_a.agent, status=HeartbeatRun.Status.FAILED)
    issue = make_issue(side_a.company, status="todo")
    Issue.objects.filter(pk=issue.pk).update(execution_run=dead)
    run = make_run(side_a.agent, status=RUNNING)
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(
        f"/api/issues/{issue.id}/checkout", {"expectedStatuses": ["todo"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["executionRunId"] == str(run.id)


def test_checkout_in_an_unexpected_status_answers_409(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="done")
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(
        f"/api/issues/{issue.id}/checkout", {"expectedStatuses": ["todo"]}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["details"]["status"] == "done"


def test_board_checkout_for_an_agent_wakes_it(side_a, wakes, django_capture_on_commit_callbacks):
    issue = make_issue(side_a.company, status="todo")
    with django_capture_on_commit_callbacks(execute=True):
        response = side_a.board.post(
            f"/api/issues/{issue.id}/checkout",
            {"agentId": str(side_a.agent.id), "expectedStatuses": ["todo"]},
            format="json",
        )
    assert response.status_code == 200
    assert response.json()["checkoutRunId"] is None
    assert [w["reason"] for w in wakes] == ["issue_checked_out"]


def test_board_checkout_needs_an_agent_id(side_a):
    issue = make_issue(side_a.company, status="todo")
    response = side_a.board.post(
        f"/api/issues/{issue.id}/checkout", {"expectedStatuses": ["todo"]}, format="json"
    )
    assert response.status_code == 400
    assert "agentId" in response.json()["details"]


def test_release_returns_the_issue_to_todo_and_keeps_the_execution_lock(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="in_progress", assignee_agent_id=side_a.agent.id)
    Issue.objects.filter(pk=issue.pk).update(checkout_run=run, execution_run=run)
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(f"/api/issues/{issue.id}/release")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["assigneeAgentId"], body["checkoutRunId"]) == (
        "todo",
        None,
        None,
    )
    assert body["executionRunId"] == str(run.id)


# Comments


def test_agent_comment_records_author_and_run(side_a):
    run = make_run(side_a.agent, status=RUNNING)
    issue = make_issue(side_a.company, status="todo")
    client = agent_client_for(side_a.agent, run_id=run.id)
    response = client.post(f"/api/issues/{issue.id}/comments", {"body": "On it"}, format="json")
    assert response.status_code == 201
    assert response.json()["authorAgentId"] == str(side_a.agent.id)
    assert response.json()["createdByRunId"] == str(run.id)


def test_empty_comment_answers_400_naming_body(side_a):
    issue = make_issue(side_a.company)
    response = side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": ""}, format="json")
    assert response.status_code == 400
    assert "body" in response.json()["details"]


def test_comments_list_after_a_comment_in_both_orders(side_a):
    issue = make_issue(side_a.company)
    ids = [
        side_a.board.post(
            f"/api/issues/{issue.id}/comments", {"body": f"c{n}"}, format="json"
        ).json()["id"]
        for n in range(4)
    ]
    url = f"/api/issues/{issue.id}/comments"
    assert [c["id"] for c in side_a.board.get(url, {"after": ids[1]}).json()] == ids[2:]
    newest_first = side_a.board.get(url, {"after": ids[2], "order": "desc"}).json()
    assert [c["id"] for c in newest_first] == [ids[1], ids[0]]
    assert [c["id"] for c in side_a.board.get(url, {"limit": 2}).json()] == ids[:2]


def test_single_comment_is_readable(side_a):
    issue = make_issue(side_a.company)
    created = side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": "hi"}, format="json")
    response = side_a.agent_client.get(f"/api/issues/{issue.id}/comments/{created.json()['id']}")
    assert response.status_code == 200
    assert response.json()["body"] == "hi"


def test_board_comment_on_an_agents_issue_wakes_the_agent_with_the_comment(
    side_a, wakes, django_capture_on_commit_callbacks
):
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    with django_capture_on_commit_callbacks(execute=True):
        created = side_a.board.post(
            f"/api/issues/{issue.id}/comments", {"body": "Any news?"}, format="json"
        )
    assert len(wakes) == 1
    assert wakes[0]["reason"] == "issue_commented"
    assert wakes[0]["payload"]["commentId"] == created.json()["id"]


def test_comment_with_reopen_moves_a_done_issue_back_to_todo(side_a):
    issue = make_issue(side_a.company, status="done")
    side_a.board.post(
        f"/api/issues/{issue.id}/comments", {"body": "Not fixed", "reopen": True}, format="json"
    )
    issue.refresh_from_db()
    assert (issue.status, issue.completed_at) == ("todo", None)


def test_heartbeat_context_gives_issue_ancestors_and_comment_cursor(side_a):
    parent = make_issue(side_a.company, title="Epic")
    issue = make_issue(side_a.company, title="Task", parent_id=parent.id, description="Do it")
    created = side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": "go"}, format="json")
    response = side_a.agent_client.get(
        f"/api/issues/{issue.id}/heartbeat-context", {"wakeCommentId": created.json()["id"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["issue"]["id"] == str(issue.id)
    assert body["description"] == "Do it"
    assert [a["id"] for a in body["ancestors"]] == [str(parent.id)]
    assert body["commentCursor"]["totalComments"] == 1
    assert body["commentCursor"]["latestCommentId"] == created.json()["id"]
    assert body["wakeComment"]["body"] == "go"


def test_heartbeat_context_lists_five_ancestors_nearest_first(side_a):
    chain = [make_issue(side_a.company, title="Root")]
    for depth in range(6):
        chain.append(make_issue(side_a.company, title=f"Level {depth}", parent_id=chain[-1].id))
    issue = make_issue(side_a.company, title="Task", parent_id=chain[-1].id)
    body = side_a.agent_client.get(f"/api/issues/{issue.id}/heartbeat-context").json()
    assert [a["id"] for a in body["ancestors"]] == [str(i.id) for i in reversed(chain[-5:])]


def test_heartbeat_context_of_an_issue_without_comments_has_an_empty_cursor(side_a):
    issue = make_issue(side_a.company)
    body = side_a.agent_client.get(f"/api/issues/{issue.id}/heartbeat-context").json()
    assert body["ancestors"] == []
    assert body["commentCursor"] == {
        "totalComments": 0,
        "latestCommentId": None,
        "latestCommentAt": None,
    }
    assert body["wakeComment"] is None


# Issue activity, the OpenAPI document


def test_issue_activity_lists_the_issues_entries_newest_first(side_a):
    issue = make_issue(side_a.company, status="todo")
    side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": "hi"}, format="json")
    side_a.board.patch(f"/api/issues/{issue.id}", {"priority": "high"}, format="json")
    response = side_a.board.get(f"/api/issues/{issue.identifier}/activity")
    assert [row["action"] for row in response.json()] == [
        "issue.updated",
        "issue.comment_added",
        "issue.created",
    ]


def test_issue_activity_of_another_company_answers_404(side_a, side_b):
    issue = make_issue(side_b.company)
    assert side_a.board.get(f"/api/issues/{issue.id}/activity").status_code == 404


# Comments: Paperclip's parameter name, deletion


def test_comments_after_comment_id_is_the_same_cursor_as_after(side_a):
    issue = make_issue(side_a.company)
    url = f"/api/issues/{issue.id}/comments"
    ids = [side_a.board.post(url, {"body": n}, format="json").json()["id"] for n in "abc"]
    rows = side_a.board.get(url, {"afterCommentId": ids[0]}).json()
    assert [row["id"] for row in rows] == ids[1:]


def test_comments_after_a_comment_in_descending_order_are_the_older_ones(side_a):
    issue = make_issue(side_a.company)
    url = f"/api/issues/{issue.id}/comments"
    ids = [side_a.board.post(url, {"body": n}, format="json").json()["id"] for n in "abcd"]
    rows = side_a.board.get(url, {"after": ids[2], "order": "desc", "limit": 1}).json()
    assert [row["id"] for row in rows] == [ids[1]]


def test_comments_after_a_comment_of_another_issue_answers_400(side_a):
    issue, other = make_issue(side_a.company), make_issue(side_a.company)
    other_url = f"/api/issues/{other.id}/comments"
    foreign = side_a.board.post(other_url, {"body": "x"}, format="json").json()["id"]
    response = side_a.board.get(f"/api/issues/{issue.id}/comments", {"after": foreign})
    assert response.status_code == 400


def test_author_deletes_a_comment_and_a_tombstone_stays(side_a):
    issue = make_issue(side_a.company)
    url = f"/api/issues/{issue.id}/comments"
    comment_id = side_a.board.post(url, {"body": "typo"}, format="json").json()["id"]
    response = side_a.board.delete(f"{url}/{comment_id}")
    assert response.status_code == 200
    comment = IssueComment.objects.get(pk=comment_id)
    assert (comment.body, comment.deleted_by_user_id) == ("", str(side_a.user.pk))
    assert response.json()["deletedAt"] is not None
    assert [row["id"] for row in side_a.board.get(url).json()] == [comment_id]
    assert ActivityLog.objects.filter(action="issue.comment_deleted", entity_id=issue.id).exists()


def test_deleting_someone_elses_comment_answers_403(side_a):
    issue = make_issue(side_a.company)
    url = f"/api/issues/{issue.id}/comments"
    comment_id = side_a.board.post(url, {"body": "mine"}, format="json").json()["id"]
    response = side_a.agent_client.delete(f"{url}/{comment_id}")
    assert response.status_code == 403
    assert response.json()["error"] == "Only the comment author can delete comments"
    assert IssueComment.objects.get(pk=comment_id).body == "mine"


def test_deleting_a_comment_of_another_issue_answers_404(side_a):
    url = f"/api/issues/{make_issue(side_a.company).id}/comments"
    comment_id = side_a.board.post(url, {"body": "x"}, format="json").json()["id"]
    other = make_issue(side_a.company)
    assert side_a.board.delete(f"/api/issues/{other.id}/comments/{comment_id}").status_code == 404


def test_agent_deletes_its_comment_on_its_issue_from_its_run(side_a):
    issue = make_issue(side_a.company, status="todo", assignee_agent_id=side_a.agent.id)
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    client = agent_client_for(side_a.agent, run_id=run.id)
    url = f"/api/issues/{issue.id}/comments"
    comment_id = client.post(url, {"body": "draft"}, format="json").json()["id"]
    response = client.delete(f"{url}/{comment_id}")
    assert response.json()["deletedByRunId"] == str(run.id)
    assert Issue.objects.get(pk=issue.pk).status == "todo"
