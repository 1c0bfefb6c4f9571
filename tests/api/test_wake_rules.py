"""docs/wake-rules.md, row by row: each test makes one change through the API and reads the wakes
and runs it left in the database."""

from __future__ import annotations

import pytest

from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun
from heartbeat.services import lifecycle
from issues.models import Issue, IssueComment
from tests.api.conftest import agent_client_for
from tests.factories import make_agent, make_issue, make_run

pytestmark = pytest.mark.django_db

TODO, BACKLOG, BLOCKED = Issue.Status.TODO, Issue.Status.BACKLOG, Issue.Status.BLOCKED
IN_REVIEW, DONE, CANCELLED = Issue.Status.IN_REVIEW, Issue.Status.DONE, Issue.Status.CANCELLED


@pytest.fixture
def delivered(django_capture_on_commit_callbacks, monkeypatch):
    """Run the after-commit wakes of the requests made inside the block, as in production, but
    keep the queued runs off django-q2 (nothing here executes them)."""
    monkeypatch.setattr(lifecycle, "_run_dispatch", lambda run_id: None)
    return lambda: django_capture_on_commit_callbacks(execute=True)


def wakes_of(agent: Agent) -> list[AgentWakeupRequest]:
    return list(AgentWakeupRequest.objects.filter(agent=agent).order_by("requested_at"))


def only_wake(agent: Agent) -> AgentWakeupRequest:
    wakes = wakes_of(agent)
    assert len(wakes) == 1, [w.reason for w in wakes]
    return wakes[0]


def mention(agent: Agent) -> str:
    return f"[@{agent.name}](agent://{agent.id})"


def agents_issue(side, **fields) -> Issue:
    return make_issue(side.company, assignee_agent_id=side.agent.id, **fields)


# Creating an issue


def test_row1_creating_an_assigned_todo_issue_wakes_the_assignee(side_a, delivered):
    with delivered():
        response = side_a.board.post(
            f"/api/companies/{side_a.company.id}/issues",
            {"title": "Ship it", "status": "todo", "assigneeAgentId": str(side_a.agent.id)},
            format="json",
        )
    wake = only_wake(side_a.agent)
    issue_id = response.json()["id"]
    assert (wake.source, wake.reason) == ("assignment", "issue_assigned")
    assert wake.payload == {"issueId": issue_id, "mutation": "create"}
    assert wake.run.context_snapshot["source"] == "issue.create"
    assert wake.run.context_snapshot["wakeReason"] == "issue_assigned"


def test_row2_creating_a_backlog_issue_wakes_nobody(side_a, delivered):
    with delivered():
        side_a.board.post(
            f"/api/companies/{side_a.company.id}/issues",
            {"title": "Later", "status": "backlog", "assigneeAgentId": str(side_a.agent.id)},
            format="json",
        )
    assert wakes_of(side_a.agent) == []


# Updating an issue


def test_row3_assigning_an_agent_wakes_it(side_a, delivered):
    issue = make_issue(side_a.company, status=TODO)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"assigneeAgentId": str(side_a.agent.id)}, format="json"
        )
    wake = only_wake(side_a.agent)
    assert (wake.source, wake.reason) == ("assignment", "issue_assigned")
    assert wake.payload == {"issueId": str(issue.id), "mutation": "update"}
    assert wake.run.context_snapshot["source"] == "issue.update"


def test_row4_assigning_an_agent_in_backlog_wakes_nobody(side_a, delivered):
    issue = make_issue(side_a.company, status=BACKLOG)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"assigneeAgentId": str(side_a.agent.id)}, format="json"
        )
    assert wakes_of(side_a.agent) == []


def test_row5_reassigning_with_a_comment_wakes_only_the_new_assignee_with_it(side_a, delivered):
    previous = make_agent(side_a.company)
    issue = make_issue(side_a.company, status=TODO, assignee_agent_id=previous.id)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}",
            {"assigneeAgentId": str(side_a.agent.id), "comment": "Yours now"},
            format="json",
        )
    comment_id = str(IssueComment.objects.get(issue=issue).id)
    wake = only_wake(side_a.agent)
    assert wake.reason == "issue_assigned"
    assert wake.payload["commentId"] == comment_id
    assert wake.run.context_snapshot["wakeCommentId"] == comment_id
    assert wakes_of(previous) == []


@pytest.mark.parametrize("status_after", [TODO, Issue.Status.IN_PROGRESS])
def test_row6_leaving_backlog_wakes_the_assignee(side_a, delivered, status_after):
    issue = agents_issue(side_a, status=BACKLOG)
    with delivered():
        side_a.board.patch(f"/api/issues/{issue.id}", {"status": status_after}, format="json")
    wake = only_wake(side_a.agent)
    assert (wake.source, wake.reason) == ("automation", "issue_status_changed")
    assert wake.payload == {"issueId": str(issue.id), "mutation": "update"}
    assert wake.run.context_snapshot["source"] == "issue.status_change"


def test_row7_unblocking_to_todo_wakes_the_assignee(side_a, delivered):
    issue = agents_issue(side_a, status=BLOCKED)
    with delivered():
        side_a.board.patch(f"/api/issues/{issue.id}", {"status": "todo"}, format="json")
    assert only_wake(side_a.agent).reason == "issue_status_changed"


@pytest.mark.parametrize("closed", [DONE, CANCELLED])
def test_row8_reopening_to_todo_wakes_the_assignee(side_a, delivered, closed):
    issue = agents_issue(side_a, status=closed)
    with delivered():
        side_a.board.patch(f"/api/issues/{issue.id}", {"status": "todo"}, format="json")
    assert only_wake(side_a.agent).reason == "issue_status_changed"


def test_row9_person_sending_a_review_back_to_todo_wakes_the_assignee(side_a, delivered):
    issue = agents_issue(side_a, status=IN_REVIEW)
    with delivered():
        side_a.board.patch(f"/api/issues/{issue.id}", {"status": "todo"}, format="json")
    assert only_wake(side_a.agent).reason == "issue_status_changed"


def test_row10_agent_sending_a_review_back_to_todo_wakes_nobody(side_a, delivered):
    reviewer = make_agent(side_a.company)
    issue = agents_issue(side_a, status=IN_REVIEW)
    with delivered():
        response = agent_client_for(reviewer).patch(
            f"/api/issues/{issue.id}", {"status": "todo"}, format="json"
        )
    assert response.status_code == 200
    assert wakes_of(side_a.agent) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (TODO, Issue.Status.IN_PROGRESS),
        (Issue.Status.IN_PROGRESS, IN_REVIEW),
        (TODO, DONE),
        (BLOCKED, Issue.Status.IN_PROGRESS),
    ],
)
def test_row11_other_status_changes_wake_nobody(side_a, delivered, before, after):
    issue = agents_issue(side_a, status=before)
    with delivered():
        response = side_a.board.patch(f"/api/issues/{issue.id}", {"status": after}, format="json")
    assert response.status_code == 200
    assert wakes_of(side_a.agent) == []


# Comments


def test_row12_board_comment_in_a_patch_steers_an_issue_in_review(side_a, delivered):
    issue = agents_issue(side_a, status=IN_REVIEW)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"comment": "Rename the flag first"}, format="json"
        )
    comment_id = str(IssueComment.objects.get(issue=issue).id)
    wake = only_wake(side_a.agent)
    assert (wake.source, wake.reason) == ("automation", "issue_commented")
    assert wake.payload == {
        "issueId": str(issue.id),
        "commentId": comment_id,
        "mutation": "comment",
    }
    context = wake.run.context_snapshot
    assert (context["source"], context["wakeCommentId"]) == ("issue.comment", comment_id)
    assert context["wakeCommentIds"] == [comment_id]


def test_row12_another_agents_posted_comment_wakes_the_assignee(side_a, delivered):
    colleague = make_agent(side_a.company)
    issue = agents_issue(side_a, status=TODO)
    with delivered():
        created = agent_client_for(colleague).post(
            f"/api/issues/{issue.id}/comments", {"body": "FYI the API changed"}, format="json"
        )
    wake = only_wake(side_a.agent)
    assert wake.reason == "issue_commented"
    assert wake.run.context_snapshot["commentId"] == created.json()["id"]


def test_row13_the_assignees_own_comment_wakes_nobody(side_a, delivered):
    issue = agents_issue(side_a, status=TODO)
    with delivered():
        side_a.agent_client.post(
            f"/api/issues/{issue.id}/comments", {"body": "Notes"}, format="json"
        )
    assert wakes_of(side_a.agent) == []


@pytest.mark.parametrize("finished", [DONE, CANCELLED, BLOCKED])
def test_row14_person_commenting_on_finished_work_reopens_it_and_wakes_the_assignee(
    side_a, delivered, finished
):
    issue = agents_issue(side_a, status=finished)
    with delivered():
        created = side_a.board.post(
            f"/api/issues/{issue.id}/comments", {"body": "One more thing"}, format="json"
        )
    issue.refresh_from_db()
    assert (issue.status, issue.completed_at, issue.cancelled_at) == (TODO, None, None)
    wake = only_wake(side_a.agent)
    assert wake.reason == "issue_reopened_via_comment"
    assert wake.payload["reopenedFrom"] == finished
    context = wake.run.context_snapshot
    assert (context["source"], context["reopenedFrom"]) == ("issue.comment.reopen", finished)
    assert context["wakeCommentId"] == created.json()["id"]


def test_row15_another_agents_comment_on_done_work_leaves_it_closed(side_a, delivered):
    colleague = make_agent(side_a.company)
    issue = agents_issue(side_a, status=DONE)
    with delivered():
        agent_client_for(colleague).post(
            f"/api/issues/{issue.id}/comments", {"body": "Nice"}, format="json"
        )
    issue.refresh_from_db()
    assert issue.status == DONE
    assert wakes_of(side_a.agent) == []


def test_row16_reopen_flag_from_another_agent_reopens_and_wakes(side_a, delivered):
    colleague = make_agent(side_a.company)
    issue = agents_issue(side_a, status=CANCELLED)
    with delivered():
        agent_client_for(colleague).post(
            f"/api/issues/{issue.id}/comments",
            {"body": "Still needed", "reopen": True},
            format="json",
        )
    issue.refresh_from_db()
    assert issue.status == TODO
    assert only_wake(side_a.agent).reason == "issue_reopened_via_comment"


def test_row16_reopen_flag_in_a_patch_reopens_and_wakes(side_a, delivered):
    colleague = make_agent(side_a.company)
    issue = agents_issue(side_a, status=DONE)
    with delivered():
        agent_client_for(colleague).patch(
            f"/api/issues/{issue.id}", {"comment": "Regressed", "reopen": True}, format="json"
        )
    issue.refresh_from_db()
    assert issue.status == TODO
    assert only_wake(side_a.agent).payload["reopenedFrom"] == DONE


def test_row17_assignees_own_reopen_comment_on_done_work_is_a_log_line(side_a, delivered):
    issue = agents_issue(side_a, status=DONE)
    with delivered():
        side_a.agent_client.post(
            f"/api/issues/{issue.id}/comments", {"body": "Wrap-up", "reopen": True}, format="json"
        )
    issue.refresh_from_db()
    assert issue.status == DONE
    assert wakes_of(side_a.agent) == []


def test_row18_closing_with_a_comment_wakes_nobody(side_a, delivered):
    issue = agents_issue(side_a, status=IN_REVIEW)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"status": "done", "comment": "Shipped"}, format="json"
        )
    assert wakes_of(side_a.agent) == []


def test_row19_unblocking_with_a_comment_wakes_once_with_the_comment(side_a, delivered):
    issue = agents_issue(side_a, status=BLOCKED)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"status": "todo", "comment": "CI is green"}, format="json"
        )
    wake = only_wake(side_a.agent)
    assert wake.reason == "issue_reopened_via_comment"
    assert wake.payload["commentId"] == str(IssueComment.objects.get(issue=issue).id)


# Mentions


def test_row20_mentioned_agent_is_woken_with_the_comment(side_a, delivered):
    reviewer = make_agent(side_a.company, name="Reviewer")
    issue = make_issue(side_a.company, status=TODO, assignee_user_id="7")
    with delivered():
        created = side_a.board.post(
            f"/api/issues/{issue.id}/comments",
            {"body": f"{mention(reviewer)} please review"},
            format="json",
        )
    wake = only_wake(reviewer)
    assert (wake.source, wake.reason) == ("automation", "issue_comment_mentioned")
    assert wake.payload == {"issueId": str(issue.id), "commentId": created.json()["id"]}
    context = wake.run.context_snapshot
    assert (context["source"], context["wakeCommentId"]) == (
        "comment.mention",
        created.json()["id"],
    )


def test_row21_self_foreign_and_plain_text_mentions_wake_nobody(side_a, side_b, delivered):
    author = make_agent(side_a.company, name="Author")
    plain = make_agent(side_a.company, name="Plain")
    issue = make_issue(side_a.company, status=TODO)
    body = f"{mention(author)} {mention(side_b.agent)} @Plain"
    with delivered():
        response = agent_client_for(author).post(
            f"/api/issues/{issue.id}/comments", {"body": body}, format="json"
        )
    assert response.status_code == 201
    assert AgentWakeupRequest.objects.filter(agent__in=[author, plain, side_b.agent]).count() == 0


def test_row22_mentioned_assignee_is_woken_once_as_assignee_by_a_posted_comment(side_a, delivered):
    issue = agents_issue(side_a, status=TODO)
    with delivered():
        side_a.board.post(
            f"/api/issues/{issue.id}/comments",
            {"body": f"{mention(side_a.agent)} ping"},
            format="json",
        )
    assert only_wake(side_a.agent).reason == "issue_commented"


def test_row22_mentioned_assignee_is_woken_once_as_mentioned_by_a_patch(side_a, delivered):
    issue = agents_issue(side_a, status=TODO)
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"comment": f"{mention(side_a.agent)} ping"}, format="json"
        )
    assert only_wake(side_a.agent).reason == "issue_comment_mentioned"


# Checkout


def test_row23_board_checkout_for_an_agent_wakes_it(side_a, delivered):
    issue = make_issue(side_a.company, status=TODO)
    with delivered():
        side_a.board.post(
            f"/api/issues/{issue.id}/checkout", {"agentId": str(side_a.agent.id)}, format="json"
        )
    wake = only_wake(side_a.agent)
    assert (wake.source, wake.reason) == ("assignment", "issue_checked_out")
    assert wake.payload == {"issueId": str(issue.id), "mutation": "checkout"}
    assert wake.run.context_snapshot["source"] == "issue.checkout"


def test_row24_agent_checking_out_from_its_run_wakes_nobody(side_a, delivered):
    issue = make_issue(side_a.company, status=TODO)
    run = make_run(side_a.agent, status=HeartbeatRun.Status.RUNNING)
    with delivered():
        response = agent_client_for(side_a.agent, run_id=run.id).post(
            f"/api/issues/{issue.id}/checkout", {}, format="json"
        )
    assert response.status_code == 200
    assert wakes_of(side_a.agent) == []


# How a wake reaches a run


def test_row25_comment_joins_the_agents_queued_run_for_the_issue(side_a, delivered):
    issue = agents_issue(side_a, status=TODO)
    queued = make_run(side_a.agent, context_snapshot={"issueId": str(issue.id)})
    with delivered():
        first = side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": "a"}, format="json")
        second = side_a.board.post(f"/api/issues/{issue.id}/comments", {"body": "b"}, format="json")
    assert [w.status for w in wakes_of(side_a.agent)] == ["coalesced", "coalesced"]
    queued.refresh_from_db()
    assert queued.context_snapshot["wakeCommentIds"] == [first.json()["id"], second.json()["id"]]
    assert HeartbeatRun.objects.filter(agent=side_a.agent).count() == 1


def test_row26_comment_during_a_running_run_waits_for_a_fresh_run(side_a, delivered):
    issue = agents_issue(side_a, status=TODO)
    running = make_run(
        side_a.agent,
        status=HeartbeatRun.Status.RUNNING,
        context_snapshot={"issueId": str(issue.id)},
    )
    Issue.objects.filter(pk=issue.pk).update(execution_run=running)
    with delivered():
        created = side_a.board.post(
            f"/api/issues/{issue.id}/comments", {"body": "Also do X"}, format="json"
        )
    wake = only_wake(side_a.agent)
    assert (wake.status, wake.run_id) == ("deferred_issue_execution", None)
    assert wake.payload["_paperclipWakeContext"]["wakeCommentId"] == created.json()["id"]


def test_row28_paused_assignee_is_not_woken_and_the_comment_stands(side_a, delivered):
    Agent.objects.filter(pk=side_a.agent.pk).update(status="paused")
    issue = agents_issue(side_a, status=TODO)
    with delivered():
        response = side_a.board.post(
            f"/api/issues/{issue.id}/comments", {"body": "When you are back"}, format="json"
        )
    assert response.status_code == 201
    assert wakes_of(side_a.agent) == []
    assert HeartbeatRun.objects.filter(agent=side_a.agent).count() == 0


def test_row26_mention_waits_behind_the_assignees_active_run(side_a, delivered):
    reviewer = make_agent(side_a.company, name="Reviewer")
    issue = agents_issue(side_a, status=TODO)
    make_run(side_a.agent, context_snapshot={"issueId": str(issue.id)})
    with delivered():
        side_a.board.patch(
            f"/api/issues/{issue.id}", {"comment": f"{mention(reviewer)} look"}, format="json"
        )
    wake = only_wake(reviewer)
    assert (wake.status, wake.run_id) == ("deferred_issue_execution", None)
    assert wake.payload["_paperclipWakeContext"]["wakeReason"] == "issue_comment_mentioned"
