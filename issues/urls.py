"""The issues app's routes, under /api/ (included by paperclip.urls): issues and comments."""

from django.urls import path

from issues import api

urlpatterns = [
    path(
        "companies/<uuid:company_id>/issues",
        api.CompanyIssuesView.as_view(),
        name="company-issues",
    ),
    path("issues/<str:issue_ref>", api.IssueDetailView.as_view(), name="issue"),
    path(
        "issues/<str:issue_ref>/checkout",
        api.IssueCheckoutView.as_view(),
        name="issue-checkout",
    ),
    path(
        "issues/<str:issue_ref>/release",
        api.IssueReleaseView.as_view(),
        name="issue-release",
    ),
    path(
        "issues/<str:issue_ref>/comments",
        api.IssueCommentsView.as_view(),
        name="issue-comments",
    ),
    path(
        "issues/<str:issue_ref>/comments/<uuid:comment_id>",
        api.IssueCommentDetailView.as_view(),
        name="issue-comment",
    ),
    path(
        "issues/<str:issue_ref>/activity",
        api.IssueActivityView.as_view(),
        name="issue-activity",
    ),
    path(
        "issues/<str:issue_ref>/heartbeat-context",
        api.IssueHeartbeatContextView.as_view(),
        name="issue-heartbeat-context",
    ),
]
