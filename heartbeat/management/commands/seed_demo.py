import os
import sys

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from heartbeat.models import Agent
from heartbeat.services import AgentNotInvokable, agent_create, runs_of_issue, wake_agent
from issues.models import Issue
from issues.services import issue_create
from paperclip.models import Company, CompanyMembership
from paperclip.services import company_create, company_membership_ensure

DEMO_PREFIX = "DEMO"
DEMO_AGENT_NAME = "Demo engineer"
DEMO_ISSUE_TITLE = "Say hello from the example agent"


class Command(BaseCommand):
    help = (
        "Create (once) a demo company with the board login as owner, a `process` agent running "
        "heartbeat/example_agent.py, and a todo issue assigned to it, and wake the agent so a "
        "real run happens as soon as a django-q2 cluster is up. Running it again creates "
        "nothing new and wakes the agent only while its issue is still open and idle."
    )

    def handle(self, *args, **options):
        username = os.environ.get("PAPERCLIP_ADMIN_USER", "admin")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            call_command("ensure_board_login", stdout=self.stdout)
            user = get_user_model().objects.get(username=username)
        with transaction.atomic():
            company = Company.objects.filter(issue_prefix=DEMO_PREFIX).first() or company_create(
                name="Demo Company",
                issue_prefix=DEMO_PREFIX,
                description="Seeded by manage.py seed_demo: one agent, one issue.",
                creator_user_id=user.pk,
            )
            company_membership_ensure(
                company_id=company.id,
                user_id=user.pk,
                role=CompanyMembership.Role.OWNER,
                actor_id="seed_demo",
            )
            agent = Agent.objects.filter(company=company, name=DEMO_AGENT_NAME).first()
            if agent is None:
                agent = agent_create(
                    company_id=company.id,
                    name=DEMO_AGENT_NAME,
                    fields={
                        "role": "engineer",
                        "title": "Runs heartbeat/example_agent.py",
                        "adapter_type": "process",
                        "adapter_config": {
                            "command": sys.executable,
                            "args": ["-m", "heartbeat.example_agent"],
                            "timeoutSec": 120,
                        },
                    },
                )
            issue = Issue.objects.filter(company=company, title=DEMO_ISSUE_TITLE).first()
            if issue is None:
                issue = issue_create(
                    company_id=company.id,
                    title=DEMO_ISSUE_TITLE,
                    description="Check the issue out, read its context, comment, mark it done.",
                    status=Issue.Status.TODO,
                    assignee_agent_id=agent.id,
                    created_by_user_id=str(user.pk),
                )
        self.stdout.write(
            f"Demo company {company.name!r} ({company.issue_prefix}): agent {agent.name!r}, "
            f"issue {issue.identifier} ({issue.status})."
        )
        self._wake(agent, issue)

    def _wake(self, agent: Agent, issue: Issue) -> None:
        if issue.status in (Issue.Status.DONE, Issue.Status.CANCELLED):
            self.stdout.write("The demo issue is already closed; its run is in the admin.")
            return
        if runs_of_issue(issue.id).active().exists():
            self.stdout.write("A run for the demo issue is already queued or running.")
            return
        try:
            result = wake_agent(
                agent_id=agent.id,
                source="assignment",
                trigger_detail="system",
                reason="issue_assigned",
                payload={"issueId": str(issue.id)},
                requested_by_actor_type="system",
                requested_by_actor_id="seed_demo",
            )
        except AgentNotInvokable as exc:
            self.stdout.write(f"The demo agent is {exc.status}; resume it to run the demo.")
            return
        run_id = result.run.id if result.run else None
        self.stdout.write(f"Woke {agent.name!r}: {result.outcome.value} (run {run_id}).")
