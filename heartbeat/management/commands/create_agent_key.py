import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from heartbeat.models import Agent
from heartbeat.services import AgentStateConflict, agent_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for an agent (Authorization: Bearer ...) and print it. It is shown "
        "this once; only its hash is kept. Runs need none: each gets its own key."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent", help="the agent's id, or its name")
        parser.add_argument(
            "--company", help="the company's issue prefix or id, when several agents share a name"
        )
        parser.add_argument("--name", default="manage.py", help="a label for the key")

    def handle(self, *args, **options):
        agent = self.agent(options["agent"], options["company"])
        try:
            created = agent_key_create(
                agent_id=agent.id, name=options["name"], actor_type="system", actor_id="manage.py"
            )
        except AgentStateConflict as exc:
            raise CommandError(f"agent {agent.name!r}: {exc}") from exc
        self.stderr.write(
            f"API key {created.key.name!r} for agent {agent.name!r} of {agent.company.name!r} "
            "(shown once; store it now):"
        )
        self.stdout.write(created.secret)

    def agent(self, reference: str, company: str | None) -> Agent:
        matches = Q(pk=reference) if _is_uuid(reference) else Q(name__iexact=reference)
        if company:
            in_company = Q(company__issue_prefix__iexact=company)
            if _is_uuid(company):
                in_company |= Q(company_id=company)
            matches &= in_company
        found = list(Agent.objects.select_related("company").filter(matches)[:10])
        if not found:
            raise CommandError(f"no agent {reference!r}; pass an agent's id or name")
        if len(found) > 1:
            companies = ", ".join(sorted(agent.company.issue_prefix for agent in found))
            raise CommandError(
                f"{len(found)} agents are named {reference!r} (companies {companies}); "
                "pass the agent's id, or --company PREFIX"
            )
        return found[0]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
