from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularJSONAPIView, SpectacularSwaggerView

from heartbeat import api as heartbeat_api
from issues import api as issues_api
from paperclip import api as core_api

handler400 = "paperclip.api.json_bad_request"
handler404 = "paperclip.api.json_not_found"
handler500 = "paperclip.api.json_server_error"

api_patterns = [
    path("api/", core_api.ApiRootView.as_view(), name="api-root"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Where Paperclip serves its document (its CLI's `openapi` reads it): the same schema, JSON.
    path("api/openapi.json", SpectacularJSONAPIView.as_view(), name="api-openapi-json"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/health", heartbeat_api.HealthView.as_view(), name="api-health"),
    # Companies
    path("api/companies", core_api.CompanyListCreateView.as_view(), name="companies"),
    path(
        "api/companies/<uuid:company_id>",
        core_api.CompanyDetailView.as_view(),
        name="company-detail",
    ),
    path(
        "api/companies/<uuid:company_id>/activity",
        core_api.CompanyActivityView.as_view(),
        name="company-activity",
    ),
    path(
        "api/companies/<uuid:company_id>/agents",
        heartbeat_api.CompanyAgentsView.as_view(),
        name="company-agents",
    ),
    path(
        "api/companies/<uuid:company_id>/issues",
        issues_api.CompanyIssuesView.as_view(),
        name="company-issues",
    ),
    path(
        "api/companies/<uuid:company_id>/heartbeat-runs",
        heartbeat_api.CompanyRunsView.as_view(),
        name="company-runs",
    ),
    path(
        "api/companies/<uuid:company_id>/dashboard",
        heartbeat_api.CompanyDashboardView.as_view(),
        name="company-dashboard",
    ),
    path(
        "api/companies/<uuid:company_id>/live-runs",
        heartbeat_api.CompanyLiveRunsView.as_view(),
        name="company-live-runs",
    ),
    # Recovery
    path("api/recovery/reap", heartbeat_api.RecoveryReapView.as_view(), name="recovery-reap"),
    path(
        "api/recovery/reconcile",
        heartbeat_api.RecoveryReconcileView.as_view(),
        name="recovery-reconcile",
    ),
    # Board tokens
    path("api/board/tokens", core_api.BoardTokenListCreateView.as_view(), name="board-tokens"),
    path(
        "api/board/tokens/<uuid:token_id>",
        core_api.BoardTokenRevokeView.as_view(),
        name="board-token-detail",
    ),
    # Paperclip's routes for the same: its CLI's `whoami` and `token board ...`
    path("api/cli-auth/me", core_api.CliAuthMeView.as_view(), name="cli-auth-me"),
    path(
        "api/board-api-keys",
        core_api.BoardApiKeyListCreateView.as_view(),
        name="board-api-keys",
    ),
    path(
        "api/board-api-keys/<uuid:key_id>",
        core_api.BoardApiKeyRevokeView.as_view(),
        name="board-api-key",
    ),
    # Agents
    path("api/agents/me", heartbeat_api.AgentMeView.as_view(), name="agent-me"),
    path("api/agents/me/inbox-lite", heartbeat_api.AgentInboxView.as_view(), name="agent-inbox"),
    path("api/agents/<uuid:agent_id>", heartbeat_api.AgentDetailView.as_view(), name="agent"),
    path(
        "api/agents/<str:agent_ref>",
        heartbeat_api.AgentByReferenceView.as_view(),
        name="agent-by-reference",
    ),
    path(
        "api/agents/<uuid:agent_id>/wakeup",
        heartbeat_api.AgentWakeView.as_view(),
        name="agent-wakeup",
    ),
    path(
        "api/agents/<uuid:agent_id>/heartbeat/invoke",
        heartbeat_api.AgentInvokeView.as_view(),
        name="agent-invoke",
    ),
    path(
        "api/agents/<uuid:agent_id>/pause",
        heartbeat_api.AgentStateView.as_view(action_name="pause"),
        name="agent-pause",
    ),
    path(
        "api/agents/<uuid:agent_id>/resume",
        heartbeat_api.AgentStateView.as_view(action_name="resume"),
        name="agent-resume",
    ),
    path(
        "api/agents/<uuid:agent_id>/terminate",
        heartbeat_api.AgentStateView.as_view(action_name="terminate"),
        name="agent-terminate",
    ),
    path(
        "api/agents/<uuid:agent_id>/runtime-state",
        heartbeat_api.AgentRuntimeStateView.as_view(),
        name="agent-runtime-state",
    ),
    path(
        "api/agents/<uuid:agent_id>/runtime-state/reset-session",
        heartbeat_api.AgentSessionResetView.as_view(),
        name="agent-session-reset",
    ),
    path(
        "api/agents/<uuid:agent_id>/task-sessions",
        heartbeat_api.AgentTaskSessionsView.as_view(),
        name="agent-task-sessions",
    ),
    path(
        "api/agents/<uuid:agent_id>/keys", heartbeat_api.AgentKeysView.as_view(), name="agent-keys"
    ),
    path(
        "api/agents/<uuid:agent_id>/keys/<uuid:key_id>",
        heartbeat_api.AgentKeyRevokeView.as_view(),
        name="agent-key",
    ),
    # Heartbeat runs
    path("api/heartbeat-runs/<uuid:run_id>", heartbeat_api.RunDetailView.as_view(), name="run"),
    path(
        "api/heartbeat-runs/<uuid:run_id>/cancel",
        heartbeat_api.RunCancelView.as_view(),
        name="run-cancel",
    ),
    path(
        "api/heartbeat-runs/<uuid:run_id>/retry",
        heartbeat_api.RunRetryView.as_view(),
        name="run-retry",
    ),
    path(
        "api/heartbeat-runs/<uuid:run_id>/log",
        heartbeat_api.RunLogView.as_view(),
        name="run-log",
    ),
    path(
        "api/heartbeat-runs/<uuid:run_id>/events",
        heartbeat_api.RunEventsView.as_view(),
        name="run-events",
    ),
    # Issues
    path("api/issues/<str:issue_ref>", issues_api.IssueDetailView.as_view(), name="issue"),
    path(
        "api/issues/<str:issue_ref>/checkout",
        issues_api.IssueCheckoutView.as_view(),
        name="issue-checkout",
    ),
    path(
        "api/issues/<str:issue_ref>/release",
        issues_api.IssueReleaseView.as_view(),
        name="issue-release",
    ),
    path(
        "api/issues/<str:issue_ref>/comments",
        issues_api.IssueCommentsView.as_view(),
        name="issue-comments",
    ),
    path(
        "api/issues/<str:issue_ref>/comments/<uuid:comment_id>",
        issues_api.IssueCommentDetailView.as_view(),
        name="issue-comment",
    ),
    path(
        "api/issues/<str:issue_ref>/activity",
        issues_api.IssueActivityView.as_view(),
        name="issue-activity",
    ),
    path(
        "api/issues/<str:issue_ref>/heartbeat-context",
        issues_api.IssueHeartbeatContextView.as_view(),
        name="issue-heartbeat-context",
    ),
    path(
        "api/issues/<str:issue_ref>/active-run",
        heartbeat_api.IssueActiveRunView.as_view(),
        name="issue-active-run",
    ),
    path(
        "api/issues/<str:issue_ref>/live-runs",
        heartbeat_api.IssueLiveRunsView.as_view(),
        name="issue-live-runs",
    ),
    path(
        "api/issues/<str:issue_ref>/runs", heartbeat_api.IssueRunsView.as_view(), name="issue-runs"
    ),
]

urlpatterns = [
    path("admin/dashboard/", include("heartbeat.dashboard")),
    path("admin/", admin.site.urls),
    *api_patterns,
]
