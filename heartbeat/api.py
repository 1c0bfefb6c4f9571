"""Agent, heartbeat-run and recovery routes (reference section 7, routes/agents.js), under /api/."""

from __future__ import annotations

import functools
import logging
import os
import re

from django.db import DatabaseError, connection
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from heartbeat import serializers as hb_serializers
from heartbeat.models import (
    ACTIVE_RUN_STATUSES,
    Agent,
    AgentApiKey,
    AgentRuntimeState,
    AgentStatus,
    AgentTaskSession,
    HeartbeatRun,
    HeartbeatRunEvent,
    RunStatus,
)
from heartbeat.run_log import run_log_path_inside_root
from heartbeat.selectors import cluster_health, company_summary
from heartbeat.services import (
    AgentInvalidInput,
    AgentNotFound,
    AgentNotInvokable,
    AgentStateConflict,
    LatestSweep,
    RunNotFound,
    RunNotRetryable,
    WakeOutcome,
    agent_create,
    agent_invoke,
    agent_key_create,
    agent_key_revoke,
    agent_pause,
    agent_resume,
    agent_session_reset,
    agent_terminate,
    agent_update,
    cancel_run,
    get_run,
    reap_orphaned_runs,
    reconcile_stranded_assigned_issues,
    run_retry_now,
    runs_of_issue,
    sweeps_latest,
)
from issues.api import issue_for_request
from issues.models import Issue
from paperclip.api import (
    ApiGenericView,
    ApiView,
    cursor_pagination,
    documented,
    get_scoped_or_404,
    json_body,
    query_params,
    register_domain_errors,
)
from paperclip.authentication import Actor
from paperclip.models import Company
from paperclip.permissions import (
    IsActor,
    IsAgent,
    IsBoardOnObject,
    IsBoardToChange,
    IsInstanceAdmin,
    request_actor,
)
from paperclip.serializers import ErrorSerializer

logger = logging.getLogger(__name__)

register_domain_errors(
    {
        AgentInvalidInput: 400,
        AgentStateConflict: 409,
        AgentNotFound: 404,
        AgentNotInvokable: 409,
        RunNotFound: 404,
        RunNotRetryable: 409,
    }
)

# What an agent's inbox shows: open work, the issue it is on first, then by priority.
INBOX_STATUSES = (Issue.Status.IN_PROGRESS, Issue.Status.TODO, Issue.Status.BLOCKED)
INBOX_LIMIT = 100


def agent_for_request(request, agent_id) -> Agent:
    return get_scoped_or_404(Agent.objects.all(), request, id=agent_id)


def run_for_request(request, run_id) -> HeartbeatRun:
    return get_scoped_or_404(HeartbeatRun.objects.all(), request, id=run_id)


# Agents


def _agent_json(request, agent: Agent) -> dict:
    """The agent as the caller may see it (adapter secrets only for the board)."""
    return hb_serializers.AgentSerializer(agent, context={"request": request}).data


class CompanyAgentsView(ApiGenericView):
    permission_classes = [IsActor, IsBoardToChange]

    queryset = Agent.objects.none()
    serializer_class = hb_serializers.AgentSerializer
    pagination_class = cursor_pagination("created_at")

    @documented(responses={200: hb_serializers.AgentSerializer(many=True)})
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        page = self.paginate_queryset(Agent.objects.filter(company=company))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @documented(
        request=hb_serializers.AgentWriteSerializer,
        responses={201: hb_serializers.AgentSerializer},
    )
    def post(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        self.check_object_permissions(request, company)
        data = dict(json_body(hb_serializers.AgentWriteSerializer, request))
        actor = request_actor(request)
        agent = agent_create(
            company_id=company.id,
            name=data.pop("name"),
            fields=data,
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
        )
        return Response(_agent_json(request, agent), status=status.HTTP_201_CREATED)


class AgentDetailView(ApiView):
    permission_classes = [IsActor, IsBoardToChange]

    @documented(responses={200: hb_serializers.AgentSerializer})
    def get(self, request, agent_id):
        return Response(_agent_json(request, agent_for_request(request, agent_id)))

    @documented(
        request=hb_serializers.AgentUpdateSerializer,
        responses={200: hb_serializers.AgentSerializer},
    )
    def patch(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        data = json_body(hb_serializers.AgentUpdateSerializer, request)
        actor = request_actor(request)
        agent = agent_update(
            agent_id=agent.id, changes=data, actor_type=actor.actor_type, actor_id=actor.actor_id
        )
        return Response(_agent_json(request, agent))


def agent_url_key(name: str) -> str:
    """Paperclip's short name of an agent: its name lower-cased, other characters as dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")


class AgentByReferenceView(ApiView):
    """An agent by its short name (`GET /api/agents/{ref}?companyId=`), as Paperclip's CLI looks
    agents up for `agent wake` and `token agent ...` when given a name instead of an id."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        # Only reads take a name: PATCH /api/agents/<not an id> names no agent, a 404 as for
        # any unknown id (it is not a method missing on an existing resource).
        raise exceptions.NotFound("Agent not found")

    @documented(
        responses={200: hb_serializers.AgentSerializer},
        errors=(409,),
        parameters=[hb_serializers.AgentReferenceQuerySerializer],
        operation_id="agents_by_reference_retrieve",
    )
    def get(self, request, agent_ref):
        if "companyId" not in request.query_params:
            # A name means nothing without its company; like any unknown id, it is not found.
            raise exceptions.NotFound("Agent not found")
        params = query_params(hb_serializers.AgentReferenceQuerySerializer, request)
        company = get_scoped_or_404(Company.objects.all(), request, id=params["companyId"])
        key = agent_url_key(agent_ref)
        matches = [
            agent
            for agent in Agent.objects.filter(company=company).exclude(
                status=AgentStatus.TERMINATED
            )
            if key and agent_url_key(agent.name) == key
        ]
        if not matches:
            raise exceptions.NotFound("Agent not found")
        if len(matches) > 1:
            raise AgentStateConflict(
                "Agent reference is ambiguous; use the agent's id",
                {"agentIds": [str(agent.id) for agent in matches]},
            )
        return Response(_agent_json(request, matches[0]))


class AgentMeView(ApiView):
    permission_classes = [IsAgent]

    @documented(responses={200: hb_serializers.AgentSerializer})
    def get(self, request):
        return Response(_agent_json(request, request_actor(request).agent))


class AgentInboxView(ApiView):
    """The caller's open assigned issues, compact: what an agent reads first on a heartbeat."""

    permission_classes = [IsAgent]

    @documented(responses={200: hb_serializers.InboxItemSerializer(many=True)})
    def get(self, request):
        agent = request_actor(request).agent
        # The hottest route of the protocol (every heartbeat of every agent reads it): one
        # indexed query in fixed SQL (building and compiling it in the ORM cost more than
        # running it), ranked in SQL, rows mapped to JSON without serializer fields.
        with connection.cursor() as cursor:
            cursor.execute(_inbox_sql(), [agent.company_id, agent.id])
            rows = cursor.fetchall()
        return Response([dict(zip(INBOX_KEYS, row, strict=True)) for row in rows])


INBOX_COLUMNS = (
    "id",
    "identifier",
    "title",
    "status",
    "priority",
    "parent_id",
    "checkout_run_id",
    "execution_run_id",
    "updated_at",
)
# The JSON keys of INBOX_COLUMNS, as InboxItemSerializer documents them.
INBOX_KEYS = tuple(hb_serializers.InboxItemSerializer().fields)
_PRIORITY_ORDER = ("critical", "high", "medium", "low")


@functools.cache
def _inbox_sql() -> str:
    def literals(values: tuple[str, ...]) -> str:
        return ", ".join(f"'{value}'" for value in values)

    def rank(column: str, values: tuple[str, ...]) -> str:
        return f"array_position(ARRAY[{literals(values)}], {column}::text)"

    statuses = literals(INBOX_STATUSES)
    return (
        f"SELECT {', '.join(INBOX_COLUMNS)} FROM {Issue._meta.db_table} "
        f"WHERE company_id = %s AND assignee_agent_id = %s AND status IN ({statuses}) "
        f"ORDER BY {rank('status', INBOX_STATUSES)}, {rank('priority', _PRIORITY_ORDER)}, "
        f"issue_number LIMIT {INBOX_LIMIT}"
    )


class AgentRuntimeStateView(ApiView):
    @documented(responses={200: hb_serializers.RuntimeStateSerializer})
    def get(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        state = AgentRuntimeState.objects.filter(agent=agent).first()
        if state is None:
            raise exceptions.NotFound("The agent has not run yet")
        return Response(hb_serializers.RuntimeStateSerializer(state).data)


class AgentTaskSessionsView(ApiView):
    """The agent's CLI session per task, newest first (board only: session ids let a CLI
    resume the agent's conversations)."""

    permission_classes = [IsActor, IsBoardOnObject]

    @documented(responses={200: hb_serializers.TaskSessionSerializer(many=True)})
    def get(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        sessions = AgentTaskSession.objects.filter(agent=agent).order_by("-updated_at", "id")
        return Response(hb_serializers.TaskSessionSerializer(sessions, many=True).data)


class AgentSessionResetView(ApiView):
    """Drop the agent's session for one task, or all its sessions: the next run starts fresh.
    Answers the runtime state (null when the agent has not run yet)."""

    permission_classes = [IsActor, IsBoardOnObject]

    @documented(
        request=hb_serializers.SessionResetSerializer,
        responses={
            200: OpenApiResponse(
                response={
                    "oneOf": [{"$ref": "#/components/schemas/RuntimeState"}],
                    "nullable": True,
                },
                description="The runtime state after the reset, or null.",
            )
        },
    )
    def post(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        data = json_body(hb_serializers.SessionResetSerializer, request)
        actor = request_actor(request)
        task_key = (data.get("taskKey") or "").strip() or None
        reset = agent_session_reset(
            agent_id=agent.id,
            task_key=task_key,
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
        )
        if reset.state is None:
            return HttpResponse(b"null", content_type="application/json")
        return Response(hb_serializers.RuntimeStateSerializer(reset.state).data)


class AgentKeysView(ApiGenericView):
    """Board only; the agent is looked up first so another company's agent answers 404."""

    permission_classes = [IsActor, IsBoardOnObject]

    queryset = AgentApiKey.objects.none()
    serializer_class = hb_serializers.AgentKeySerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(responses={200: hb_serializers.AgentKeySerializer(many=True)})
    def get(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        page = self.paginate_queryset(AgentApiKey.objects.filter(agent=agent))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @documented(
        request=hb_serializers.AgentKeyCreateSerializer,
        responses={201: hb_serializers.AgentKeyCreatedSerializer},
        errors=(409,),
    )
    def post(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        data = json_body(hb_serializers.AgentKeyCreateSerializer, request)
        actor = request_actor(request)
        created = agent_key_create(
            agent_id=agent.id,
            name=data["name"],
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
        )
        body = hb_serializers.AgentKeySerializer(created.key).data
        # `token`, as Paperclip names it (its CLI's connect commands read it); `key` is this
        # API's earlier name, kept for the clients written against it.
        body["token"] = body["key"] = created.secret
        return Response(body, status=status.HTTP_201_CREATED)


class AgentKeyRevokeView(ApiView):
    permission_classes = [IsActor, IsBoardOnObject]

    @documented(responses={200: hb_serializers.AgentKeySerializer})
    def delete(self, request, agent_id, key_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        if not AgentApiKey.objects.filter(pk=key_id, agent=agent).exists():
            raise exceptions.NotFound("Key not found")
        actor = request_actor(request)
        key = agent_key_revoke(
            agent_id=agent.id, key_id=key_id, actor_type=actor.actor_type, actor_id=actor.actor_id
        )
        return Response(hb_serializers.AgentKeySerializer(key).data)


# Wakes and agent state


def _wake_response(result) -> Response:
    """202 with the run (as the reference answers), or what happened to the wake instead."""
    if result.run is not None:
        body = hb_serializers.RunSerializer(result.run).data
        body["wakeOutcome"] = result.outcome.value
        body["wakeupId"] = str(result.wakeup.id)
        return Response(body, status=status.HTTP_202_ACCEPTED)
    body = {
        "status": "deferred" if result.outcome == WakeOutcome.DEFERRED else "skipped",
        "wakeOutcome": result.outcome.value,
        "reason": result.wakeup.reason,
        "wakeupId": str(result.wakeup.id),
    }
    return Response(hb_serializers.WakeSkippedSerializer(body).data, status=202)


WAKE_RESPONSES = {
    202: PolymorphicProxySerializer(
        component_name="WakeResponse",
        serializers=[hb_serializers.WakeRunSerializer, hb_serializers.WakeSkippedSerializer],
        resource_type_field_name=None,
    )
}


class AgentWakeView(ApiView):
    """Wake an agent (an agent may wake only itself). `invoke` is the manual on-demand form."""

    invoke = False

    @documented(
        request=hb_serializers.WakeupRequestSerializer,
        responses=WAKE_RESPONSES,
        errors=(409,),
    )
    def post(self, request, agent_id):
        actor = request_actor(request)
        agent = agent_for_request(request, agent_id)
        if actor.is_agent and actor.agent_id != agent.id:
            raise exceptions.PermissionDenied("Agent can only invoke itself")
        data = json_body(hb_serializers.WakeupRequestSerializer, request)
        source = "on_demand" if self.invoke else data["source"]
        trigger_detail = "manual" if self.invoke else data.get("triggerDetail")
        result = agent_invoke(
            agent_id=agent.id,
            actor_type=actor.actor_type,
            actor_id=actor.actor_id,
            source=source,
            trigger_detail=trigger_detail,
            reason=data.get("reason"),
            payload=data.get("payload") or {},
            idempotency_key=data.get("idempotencyKey"),
            context={"forceFreshSession": data["forceFreshSession"]},
        )
        return _wake_response(result)


class AgentInvokeView(AgentWakeView):
    invoke = True


class AgentStateView(ApiView):
    """pause, resume, terminate (board only), answering the agent as Paperclip does. Pause and
    terminate cancel the agent's active runs (each cancel is in the run's events and activity)."""

    permission_classes = [IsActor, IsBoardOnObject]

    action_name = ""

    @documented(
        request=hb_serializers.AgentPauseSerializer,
        responses={200: hb_serializers.AgentSerializer},
        errors=(409,),
    )
    def post(self, request, agent_id):
        agent = agent_for_request(request, agent_id)
        self.check_object_permissions(request, agent)
        actor = request_actor(request)
        who = {"actor_type": actor.actor_type, "actor_id": actor.actor_id}
        if self.action_name == "pause":
            data = json_body(hb_serializers.AgentPauseSerializer, request)
            change = agent_pause(agent_id=agent.id, reason=data.get("reason"), **who)
        elif self.action_name == "resume":
            change = agent_resume(agent_id=agent.id, **who)
        else:
            change = agent_terminate(agent_id=agent.id, **who)
        return Response(_agent_json(request, change.agent))


# Heartbeat runs


class RunDetailView(ApiView):
    @documented(responses={200: hb_serializers.RunSerializer})
    def get(self, request, run_id):
        run = run_for_request(request, run_id)
        # get_run replaces an oversized result_json by a summary (reference 4.3).
        return Response(hb_serializers.RunSerializer(get_run(run.id) or run).data)


class RunCancelView(ApiView):
    permission_classes = [IsActor, IsBoardOnObject]

    @documented(request=None, responses={200: hb_serializers.RunSerializer})
    def post(self, request, run_id):
        run = run_for_request(request, run_id)
        self.check_object_permissions(request, run)
        actor = request_actor(request)
        run = cancel_run(run.id, actor_type=actor.actor_type, actor_id=actor.actor_id)
        return Response(hb_serializers.RunSerializer(run).data)


class RunRetryView(ApiView):
    """Retry a run that failed, timed out or was cancelled, now (board only): its agent is woken
    again on the run's task, as the console's "Retry now"."""

    permission_classes = [IsActor, IsBoardOnObject]

    @documented(request=None, responses=WAKE_RESPONSES, errors=(409,))
    def post(self, request, run_id):
        run = run_for_request(request, run_id)
        self.check_object_permissions(request, run)
        actor = request_actor(request)
        result = run_retry_now(run_id=run.id, actor_type=actor.actor_type, actor_id=actor.actor_id)
        return _wake_response(result)


class RunLogView(ApiView):
    """A byte range of the run's NDJSON log; nextOffset is null at the end of the log."""

    @documented(
        responses={200: hb_serializers.RunLogSerializer},
        parameters=[hb_serializers.RunLogQuerySerializer],
    )
    def get(self, request, run_id):
        run = run_for_request(request, run_id)
        params = query_params(hb_serializers.RunLogQuerySerializer, request)
        content, next_offset = b"", None
        path = run_log_path_inside_root(run.log_ref) if run.log_ref else None
        if path is not None:
            try:
                with path.open("rb") as log:
                    # Seeking far past the end is an OSError on some file systems: an offset
                    # beyond the log reads nothing, like one just at its end.
                    if params["offset"] < os.fstat(log.fileno()).st_size:
                        log.seek(params["offset"])
                        content = log.read(params["limitBytes"] + 1)
            except FileNotFoundError:
                content = b""
            if len(content) > params["limitBytes"]:
                content = content[: params["limitBytes"]]
                next_offset = params["offset"] + len(content)
        body = {
            "runId": run.id,
            "store": run.log_store,
            "logRef": run.log_ref,
            "content": content.decode("utf-8", errors="replace"),
            "nextOffset": next_offset,
        }
        return Response(hb_serializers.RunLogSerializer(body).data)


class RunEventsView(ApiView):
    @documented(
        responses={200: hb_serializers.RunEventSerializer(many=True)},
        parameters=[hb_serializers.RunEventsQuerySerializer],
    )
    def get(self, request, run_id):
        run = run_for_request(request, run_id)
        params = query_params(hb_serializers.RunEventsQuerySerializer, request)
        events = HeartbeatRunEvent.objects.filter(run=run, seq__gt=params["afterSeq"]).order_by(
            "seq"
        )[: params["limit"]]
        return Response(hb_serializers.RunEventSerializer(events, many=True).data)


class CompanyRunsView(ApiGenericView):
    queryset = HeartbeatRun.objects.none()
    serializer_class = hb_serializers.RunSummarySerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(
        responses={200: hb_serializers.RunSummarySerializer(many=True)},
        parameters=[hb_serializers.RunListQuerySerializer],
    )
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        filters = query_params(hb_serializers.RunListQuerySerializer, request)
        runs = HeartbeatRun.objects.filter(company=company).defer(
            "result_json", "usage_json", "stdout_excerpt", "stderr_excerpt"
        )
        if "agentId" in filters:
            runs = runs.filter(agent_id=filters["agentId"])
        if filters.get("status"):
            runs = runs.filter(status__in=filters["status"])
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class CompanyDashboardView(ApiView):
    """Paperclip's dashboard summary of a company (its CLI's `dashboard get`)."""

    @documented(responses={200: hb_serializers.CompanySummarySerializer})
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        summary = company_summary(company=company, now=timezone.now())
        return Response(hb_serializers.CompanySummarySerializer(summary).data)


def _live_runs(runs, min_count: int) -> list[HeartbeatRun]:
    runs = runs.select_related("agent").defer(
        "result_json", "usage_json", "stdout_excerpt", "stderr_excerpt"
    )
    live = list(runs.filter(status__in=ACTIVE_RUN_STATUSES).order_by("-created_at")[:100])
    if len(live) < min_count:
        recent = runs.exclude(status__in=ACTIVE_RUN_STATUSES).order_by("-created_at")
        live += list(recent[: min_count - len(live)])
    return live


class CompanyLiveRunsView(ApiView):
    @documented(
        responses={200: hb_serializers.LiveRunSerializer(many=True)},
        parameters=[hb_serializers.LiveRunsQuerySerializer],
    )
    def get(self, request, company_id):
        company = get_scoped_or_404(Company.objects.all(), request, id=company_id)
        params = query_params(hb_serializers.LiveRunsQuerySerializer, request)
        runs = _live_runs(HeartbeatRun.objects.filter(company=company), params["minCount"])
        return Response(hb_serializers.LiveRunSerializer(runs, many=True).data)


# Runs of an issue


class IssueLiveRunsView(ApiView):
    @documented(responses={200: hb_serializers.LiveRunSerializer(many=True)})
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        runs = _live_runs(runs_of_issue(issue.id).filter(company_id=issue.company_id), 0)
        return Response(hb_serializers.LiveRunSerializer(runs, many=True).data)


class IssueActiveRunView(ApiView):
    """The run executing the issue: its execution lock if that run is active, else (for an
    in_progress issue) its assignee's running run; null when nothing runs."""

    @documented(
        responses={
            200: OpenApiResponse(
                response={"oneOf": [{"$ref": "#/components/schemas/Run"}], "nullable": True},
                description="The active run, or null.",
            )
        }
    )
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        run = None
        if issue.execution_run_id is not None:
            run = HeartbeatRun.objects.filter(
                id=issue.execution_run_id, status__in=ACTIVE_RUN_STATUSES
            ).first()
        if run is None and issue.status == Issue.Status.IN_PROGRESS and issue.assignee_agent_id:
            run = (
                runs_of_issue(issue.id)
                .filter(agent_id=issue.assignee_agent_id, status=RunStatus.RUNNING)
                .order_by("-created_at")
                .first()
            )
        if run is None:
            # DRF renders None as an empty body; clients of the reference expect JSON null.
            return HttpResponse(b"null", content_type="application/json")
        return Response(hb_serializers.RunSerializer(run).data)


class IssueRunsView(ApiGenericView):
    queryset = HeartbeatRun.objects.none()
    serializer_class = hb_serializers.RunSummarySerializer
    pagination_class = cursor_pagination("-created_at")

    @documented(responses={200: hb_serializers.RunSummarySerializer(many=True)})
    def get(self, request, issue_ref):
        issue = issue_for_request(request, issue_ref)
        runs = (
            runs_of_issue(issue.id)
            .filter(company_id=issue.company_id)
            .defer("result_json", "usage_json", "stdout_excerpt", "stderr_excerpt")
        )
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


# Recovery (instance admins: a sweep spans every company)


class RecoveryReapView(ApiView):
    """Run the orphaned-run reaper now (as `manage.py reap_orphans`): runs whose worker is gone
    fail as process_lost with one retry; live processes without a worker are marked detached."""

    permission_classes = [IsActor, IsInstanceAdmin]

    @documented(
        request=hb_serializers.RecoveryRequestSerializer,
        responses={200: hb_serializers.ReapResultSerializer},
    )
    def post(self, request):
        data = json_body(hb_serializers.RecoveryRequestSerializer, request)
        result = reap_orphaned_runs(dry_run=data["dryRun"])
        return Response(hb_serializers.ReapResultSerializer(result).data)


class RecoveryReconcileView(ApiView):
    """Run the stranded-issue reconciler now (as `manage.py reconcile_stranded`): assigned
    issues with no live execution path are re-dispatched once, then escalated to blocked."""

    permission_classes = [IsActor, IsInstanceAdmin]

    @documented(
        request=hb_serializers.RecoveryRequestSerializer,
        responses={200: hb_serializers.ReconcileResultSerializer},
    )
    def post(self, request):
        data = json_body(hb_serializers.RecoveryRequestSerializer, request)
        result = reconcile_stranded_assigned_issues(dry_run=data["dryRun"])
        return Response(hb_serializers.ReconcileResultSerializer(result).data)


# Health


def _sweeps_health(now, sweeps: dict[str, LatestSweep]) -> dict:
    report = {}
    for kind, latest in sweeps.items():
        record = latest.record
        report[kind] = {
            "ok": not latest.overdue and not (record and record.error),
            "overdue": latest.overdue,
            "lastStartedAt": record.started_at if record else None,
            "lastFinishedAt": record.finished_at if record else None,
            "ageSec": (now - record.finished_at).total_seconds() if record else None,
            "durationMs": record.duration_ms if record else None,
            "error": record.error if record else None,
        }
    return report


def _health_summary(body: dict) -> dict:
    """What anyone may see: the verdict and whether each component is ok, nothing else (error
    texts name sockets, hosts and paths; queue sizes tell how busy the instance is)."""
    summary = {"status": body["status"], "database": {"ok": body["database"]["ok"]}}
    if "cluster" in body:
        summary["cluster"] = {"ok": body["cluster"]["ok"]}
    if "sweeps" in body:
        summary["sweeps"] = {kind: {"ok": sweep["ok"]} for kind, sweep in body["sweeps"].items()}
    return summary


class HealthView(ApiView):
    """Is the product working: the database (required: 503 without it), a django-q2 cluster
    consuming the queue, and the recovery sweeps. Without credentials (and for agents) only ok or
    not per component; board members also get the details."""

    permission_classes: list = []

    def perform_authentication(self, request) -> None:
        # Credentials are checked only once the database answered: a probe must get its 503
        # while the database is down, not an error from looking up its token.
        pass

    @extend_schema(
        responses={
            200: hb_serializers.HealthSerializer,
            503: hb_serializers.HealthSerializer,
            **{code: ErrorSerializer for code in (401, 429)},
        }
    )
    def get(self, request):
        now = timezone.now()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            logger.warning("health check: the database is unavailable: %s", exc)
            body = {"status": "unavailable", "database": {"ok": False}}
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        latest = sweeps_latest(now=now)
        health = cluster_health(
            now=now, sweeps_overdue=all(sweep.overdue for sweep in latest.values())
        )
        cluster = {
            "ok": not health.down,
            "queuedTasks": health.queued_tasks,
            "oldestQueuedTaskAgeSec": health.oldest_queued_task_age_sec,
        }
        sweeps = _sweeps_health(now, latest)
        degraded = health.down or not all(sweep["ok"] for sweep in sweeps.values())
        body = {
            "status": "degraded" if degraded else "ok",
            "checkedAt": now,
            "database": {"ok": True, "error": None},
            "cluster": cluster,
            "sweeps": sweeps,
        }
        data = hb_serializers.HealthSerializer(body).data
        actor = request.auth
        if not (isinstance(actor, Actor) and actor.is_board):
            data = _health_summary(data)
        return Response(data)
