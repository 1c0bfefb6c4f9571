"""Company scoping: a board user who is not an instance admin (superuser) sees and acts on the
companies they have a membership in, whatever their Django model permissions say: board
membership is the role."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.db.models import Model, QuerySet, TextField
from django.http import Http404

from paperclip.models import Company, CompanyMembership


def board_company_ids(request) -> frozenset[uuid.UUID] | None:
    """The companies a board user may see; None means every company (an instance admin)."""
    user = request.user
    if user.is_active and user.is_superuser:
        return None
    cached = getattr(request, "_board_company_ids", None)
    if cached is None:
        if not (user.is_active and user.is_staff):
            cached = frozenset()
        else:
            cached = frozenset(
                CompanyMembership.objects.filter(user_id=user.pk).values_list(
                    "company_id", flat=True
                )
            )
        request._board_company_ids = cached
    return cached


def _object_company_id(obj: Model, company_field: str):
    value = obj
    for part in company_field.split("__"):
        value = getattr(value, part)
    return value.pk if isinstance(value, Model) else value


class ScopedCompanyListFilter(admin.RelatedFieldListFilter):
    """The company filter lists only the companies the user may see."""

    def field_choices(self, field, request, model_admin):
        companies = Company.objects.order_by("name")
        ids = board_company_ids(request)
        if ids is not None:
            companies = companies.filter(id__in=ids)
        return [(c.pk, str(c)) for c in companies]


class CompanyScopedAdmin(admin.ModelAdmin):
    """Filters rows, foreign-key choices and permissions by the user's board memberships.

    `company_field` is the lookup path from the model to its company. Rows outside the user's
    companies answer 404, exactly like rows that do not exist.
    """

    company_field = "company"
    # What a board member (not an instance admin) may do on rows of their own companies.
    board_may_add = False
    board_may_change = False
    board_may_delete = False

    def get_queryset(self, request) -> QuerySet:
        queryset = super().get_queryset(request)
        ids = board_company_ids(request)
        if ids is None:
            return queryset
        return queryset.filter(**{f"{self.company_field}__in": ids})

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id!r}")
        return obj

    def _board_allows(self, request, obj, allowed: bool) -> bool:
        ids = board_company_ids(request)
        if not allowed or not ids:
            return False
        return obj is None or _object_company_id(obj, self.company_field) in ids

    def has_module_permission(self, request) -> bool:
        if board_company_ids(request) is None:
            return super().has_module_permission(request)
        return bool(board_company_ids(request))

    def has_view_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_view_permission(request, obj)
        return self._board_allows(request, obj, True)

    def has_add_permission(self, request) -> bool:
        if board_company_ids(request) is None:
            return super().has_add_permission(request)
        return self._board_allows(request, None, self.board_may_add)

    def has_change_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_change_permission(request, obj)
        return self._board_allows(request, obj, self.board_may_change)

    def has_delete_permission(self, request, obj=None) -> bool:
        if board_company_ids(request) is None:
            return super().has_delete_permission(request, obj)
        return self._board_allows(request, obj, self.board_may_delete)

    def has_operate_permission(self, request) -> bool:
        """Operator actions (cancel, retry, pause, wake, sweeps): any board member."""
        ids = board_company_ids(request)
        return ids is None or bool(ids)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        # Nullable text columns mean "not set" when null (an assignee_user_id of "" would be a
        # second assignee), so an empty input saves null, as CharField already does.
        if db_field.null and isinstance(db_field, TextField) and hasattr(formfield, "empty_value"):
            formfield.empty_value = None
        return formfield

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        ids = board_company_ids(request)
        if ids is not None and "queryset" not in kwargs:
            related = db_field.related_model
            if related is Company:
                kwargs["queryset"] = Company.objects.filter(id__in=ids)
            elif any(f.name == "company" for f in related._meta.get_fields()):
                kwargs["queryset"] = related._default_manager.filter(company_id__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        return [
            (name, ScopedCompanyListFilter) if name == self.company_field else name
            for name in super().get_list_filter(request)
        ]


class MachineOwnedAdmin(CompanyScopedAdmin):
    """Rows written only through services by the engine, the sweeps or the API: never added,
    edited or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
