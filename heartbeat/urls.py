"""The heartbeat app's routes, under /api/ (included by paperclip.urls): agents, heartbeat runs,
recovery, health, and the runs seen from a company or an issue."""

from django.urls import path

from heartbeat import api

urlpatterns = [
    path("health", api.HealthView.as_view(), name="api-health"),
    # Of a company
    path(
        "companies/<uuid:company_id>/agents",
        api.CompanyAgentsView.as_view(),
        name="company-agents",
    ),
    path(
        "companies/<uuid:company_id>/heartbeat-runs",
        api.CompanyRunsView.as_view(),
        name="company-runs",
    ),
    path(
        "companies/<uuid:company_id>/dashboard",
        api.CompanyDashboardView.as_view(),
        name="company-dashboard",
    ),
    path(
        "companies/<uuid:company_id>/live-runs",
        api.CompanyLiveRunsView.as_view(),
        name="company-live-runs",
    ),
    # Recovery
    path("recovery/reap", api.RecoveryReapView.as_view(), name="recovery-reap"),
    path("recovery/reconcile", api.RecoveryReconcileView.as_view(), name="recovery-reconcile"),
    # Agents ("me" before the agent's short name, which would match it too)
    path("agents/me", api.AgentMeView.as_view(), name="agent-me"),
    path("agents/me/inbox-lite", api.AgentInboxView.as_view(), name="agent-inbox"),
    path("agents/<uuid:agent_id>", api.AgentDetailView.as_view(), name="agent"),
    path("agents/<str:agent_ref>", api.AgentByReferenceView.as_view(), name="agent-by-reference"),
    path("agents/<uuid:agent_id>/wakeup", api.AgentWakeView.as_view(), name="agent-wakeup"),
    path(
        "agents/<uuid:agent_id>/heartbeat/invoke",
        api.AgentInvokeView.as_view(),
        name="agent-invoke",
    ),
    path(
        "agents/<uuid:agent_id>/pause",
        api.AgentStateView.as_view(action_name="pause"),
        name="agent-pause",
    ),
    path(
        "agents/<uuid:agent_id>/resume",
        api.AgentStateView.as_view(action_name="resume"),
        name="agent-resume",
    ),
    path(
        "agents/<uuid:agent_id>/terminate",
        api.AgentStateView.as_view(action_name="terminate"),
        name="agent-terminate",
    ),
    path(
        "agents/<uuid:agent_id>/runtime-state",
        api.AgentRuntimeStateView.as_view(),
        name="agent-runtime-state",
    ),
    path(
        "agents/<uuid:agent_id>/runtime-state/reset-session",
        api.AgentSessionResetView.as_view(),
        name="agent-session-reset",
    ),
    path(
        "agents/<uuid:agent_id>/task-sessions",
        api.AgentTaskSessionsView.as_view(),
        name="agent-task-sessions",
    ),
    path("agents/<uuid:agent_id>/keys", api.AgentKeysView.as_view(), name="agent-keys"),
    path(
        "agents/<uuid:agent_id>/keys/<uuid:key_id>",
        api.AgentKeyRevokeView.as_view(),
        name="agent-key",
    ),
    # Heartbeat runs
    path("heartbeat-runs/<uuid:run_id>", api.RunDetailView.as_view(), name="run"),
    path("heartbeat-runs/<uuid:run_id>/cancel", api.RunCancelView.as_view(), name="run-cancel"),
    path("heartbeat-runs/<uuid:run_id>/retry", api.RunRetryView.as_view(), name="run-retry"),
    path("heartbeat-runs/<uuid:run_id>/log", api.RunLogView.as_view(), name="run-log"),
    path("heartbeat-runs/<uuid:run_id>/events", api.RunEventsView.as_view(), name="run-events"),
    # Runs of an issue
    path(
        "issues/<str:issue_ref>/active-run",
        api.IssueActiveRunView.as_view(),
        name="issue-active-run",
    ),
    path(
        "issues/<str:issue_ref>/live-runs",
        api.IssueLiveRunsView.as_view(),
        name="issue-live-runs",
    ),
    path("issues/<str:issue_ref>/runs", api.IssueRunsView.as_view(), name="issue-runs"),
]
