"""Small builders for test rows: each makes a valid row with overridable fields."""

from __future__ import annotations

import itertools
import uuid

from django.utils import timezone

from heartbeat.models import Agent, AgentWakeupRequest, HeartbeatRun
from issues.models import Issue
from issues.services import issue_create
from paperclip.models import Company

_counter = itertools.count(1)


def make_company(**fields) -> Company:
    n = next(_counter)
    fields.setdefault("name", f"Company {n}")
    fields.setdefault("issue_prefix", f"C{uuid.uuid4().hex[:6].upper()}")
    return Company.objects.create(**fields)


def make_agent(company: Company | None = None, **fields) -> Agent:
    company = company or make_company()
    fields.setdefault("name", f"agent-{next(_counter)}")
    return Agent.objects.create(company=company, **fields)


def make_issue(company: Company | None = None, **fields) -> Issue:
    company = company or make_company()
    fields.setdefault("title", f"Issue {next(_counter)}")
    return issue_create(company_id=company.id, **fields)


def make_wakeup(agent: Agent, **fields) -> AgentWakeupRequest:
    fields.setdefault("source", AgentWakeupRequest.Source.ON_DEMAND)
    return AgentWakeupRequest.objects.create(company_id=agent.company_id, agent=agent, **fields)


def make_run(agent: Agent, **fields) -> HeartbeatRun:
    status = fields.setdefault("status", HeartbeatRun.Status.QUEUED)
    if status != HeartbeatRun.Status.QUEUED:
        fields.setdefault("started_at", timezone.now())
    if status not in (HeartbeatRun.Status.QUEUED, HeartbeatRun.Status.RUNNING):
        fields.setdefault("finished_at", timezone.now())
    return HeartbeatRun.objects.create(company_id=agent.company_id, agent=agent, **fields)
