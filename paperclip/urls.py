from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularJSONAPIView, SpectacularSwaggerView

from paperclip import api as core_api

handler400 = "paperclip.api.json_bad_request"
handler404 = "paperclip.api.json_not_found"
handler500 = "paperclip.api.json_server_error"

# The core app's routes; each other app owns its routes in its own urls.py, included below.
api_patterns = [
    path("api/", core_api.ApiRootView.as_view(), name="api-root"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Where Paperclip serves its document (its CLI's `openapi` reads it): the same schema, JSON.
    path("api/openapi.json", SpectacularJSONAPIView.as_view(), name="api-openapi-json"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
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
    path("api/", include("heartbeat.urls")),
    path("api/", include("issues.urls")),
]

urlpatterns = [
    path("admin/dashboard/", include("heartbeat.dashboard")),
    path("admin/", admin.site.urls),
    *api_patterns,
]
