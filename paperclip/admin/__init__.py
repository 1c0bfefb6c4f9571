"""The operator console's shared pieces (company scoping, the estimating paginator, links,
saves through services) and the core app's admin; each app's admin imports the pieces from here.
"""

from django.contrib import admin

from paperclip.admin import core
from paperclip.admin.display import (
    admin_link,
    age_of,
    as_uuid,
    changelist_link,
    choices_filter,
    humanize_seconds,
    short_id,
)
from paperclip.admin.paging import BigTableAdmin, EstimatedCountPaginator, PrefetchingChangeList
from paperclip.admin.scoping import CompanyScopedAdmin, MachineOwnedAdmin, board_company_ids
from paperclip.admin.service_backed import (
    CredentialAdmin,
    ServiceBackedAdmin,
    actor_of,
    form_changes,
)

# The console is the product's, not a generic Django site.
admin.site.site_header = "Paperclip"
admin.site.site_title = "Paperclip"
admin.site.index_title = "Control plane"

__all__ = [
    "BigTableAdmin",
    "CompanyScopedAdmin",
    "CredentialAdmin",
    "EstimatedCountPaginator",
    "MachineOwnedAdmin",
    "PrefetchingChangeList",
    "ServiceBackedAdmin",
    "actor_of",
    "admin_link",
    "age_of",
    "as_uuid",
    "board_company_ids",
    "changelist_link",
    "choices_filter",
    "core",
    "form_changes",
    "humanize_seconds",
    "short_id",
]
