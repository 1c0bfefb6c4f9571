"""Deleting an agent (heartbeat.services.agents.agent_delete): never while it has a queued or
running run, never once it ran or holds an issue, and recorded when it goes through; an agent
key's last use is stamped through its service."""

from datetime import timedelta

import pytest
from django.utils import timezone

from heartbeat.models import Agent, AgentApiKey, AgentWakeupRequest
from heartbeat.services.agents import (
    AgentStateConflict,
    agent_delete,
    agent_key_create,
    agent_key_touch,
)
from issues.models import Issue
from paperclip.models import ActivityLog
from tests.factories import make_agent, make_issue, make_run, make_wakeup

ACTOR = {"actor_type": "user", "actor_id": "7"}


@pytest.mark.django_db
def test_an_agent_with_a_queued_run_is_not_deleted():
    agent = make_agent()
    make_run(agent, status="queued")

    with pytest.raises(AgentStateConflict, match="has 1 queued or running run"):
        agent_delete(agent_id=agent.pk, **ACTOR)

    assert Agent.objects.filter(pk=agent.pk).exists()
    assert not ActivityLog.objects.filter(action="agent.deleted").exists()


@pytest.mark.django_db
def test_an_agent_assigned_an_issue_is_not_deleted():
    agent = make_agent()
    issue = make_issue(agent.company, status="todo", assignee_agent_id=agent.id)

    with pytest.raises(AgentStateConflict, match="it has 1 issue, kept"):
        agent_delete(agent_id=agent.pk, **ACTOR)

    assert Issue.objects.get(pk=issue.pk).assignee_agent_id == agent.pk


@pytest.mark.django_db
def test_an_agent_that_never_ran_is_deleted_with_its_keys_and_wakes():
    agent = make_agent()
    agent_key_create(agent_id=agent.pk, name="ci", **ACTOR)
    make_wakeup(agent)

    agent_delete(agent_id=agent.pk, **ACTOR)

    assert not Agent.objects.exists()
    assert not AgentApiKey.objects.exists() and not AgentWakeupRequest.objects.exists()
    deleted = ActivityLog.objects.get(action="agent.deleted")
    assert (deleted.entity_id, deleted.details) == (str(agent.pk), {"name": agent.name})


@pytest.mark.django_db
def test_an_agent_key_used_after_the_resolution_gets_a_new_stamp():
    agent = make_agent()
    key = agent_key_create(agent_id=agent.pk, name="ci", **ACTOR).key
    old = timezone.now() - timedelta(minutes=6)
    AgentApiKey.objects.filter(pk=key.pk).update(last_used_at=old)

    agent_key_touch(key_id=key.pk, last_used_at=old)

    assert AgentApiKey.objects.get(pk=key.pk).last_used_at > old


@pytest.mark.django_db
def test_an_agent_key_used_again_within_the_resolution_is_not_written():
    agent = make_agent()
    key = agent_key_create(agent_id=agent.pk, name="ci", **ACTOR).key
    recent = timezone.now() - timedelta(minutes=1)
    AgentApiKey.objects.filter(pk=key.pk).update(last_used_at=recent)

    agent_key_touch(key_id=key.pk, last_used_at=recent)

    assert AgentApiKey.objects.get(pk=key.pk).last_used_at == recent
