"""Admin saves and deletes through the app's services (activity log, lock release, wakes,
refusals), and credentials shown once."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Model
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse


class ServiceBackedAdmin(admin.ModelAdmin):
    """Saves and deletes go through the app's services (activity log, lock release, wakes,
    refusals), not model.save() and model.delete().

    The service runs once the form (and the model's constraints) validated, inside the admin's
    transaction; a domain error it raises shows on the form like any validation error instead of
    a server error, and its own transaction has rolled back. A delete service's refusal is shown
    as an error message and nothing is deleted; an admin that routes no delete
    (`delete_through_service`) lets nobody delete.
    """

    # Domain errors of the services, shown as form errors.
    service_errors: tuple[type[Exception], ...] = ()
    # Text columns that hold one line (names, titles): a text input, not a 10-row box.
    single_line_fields: tuple[str, ...] = ("name", "title")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in self.single_line_fields:
            kwargs["widget"] = forms.TextInput(attrs={"class": "vTextField"})
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def save_through_service(self, request, form, obj: Model | None) -> Model:
        """Create (obj None) or change the object with the form's cleaned data; return it."""
        raise NotImplementedError

    def get_form(self, request, obj=None, change=False, **kwargs):
        base = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class ServiceForm(base):
            def _post_clean(self):
                super()._post_clean()
                if self.errors:
                    return
                try:
                    self.service_result = model_admin.save_through_service(request, self, obj)
                except model_admin.service_errors as exc:
                    self.add_error(None, str(exc))

        return ServiceForm

    def save_model(self, request, obj, form, change):
        saved = form.service_result
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state = saved._state

    def delete_through_service(self, request, obj: Model) -> None:
        """Delete the object through its service, which raises one of `service_errors` to
        refuse."""
        raise NotImplementedError

    def _routes_deletes(self) -> bool:
        return type(self).delete_through_service is not ServiceBackedAdmin.delete_through_service

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._routes_deletes() and super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # What goes with an object is its delete service's rule, not the operator's permissions
        # on the rows it cascades to (keys, wakes, activity: rows nobody deletes by hand). The
        # confirmation page still lists the protected rows; the confirmed delete lets the
        # service judge them and say why it refuses.
        deleted, model_count, _, protected = super().get_deleted_objects(objs, request)
        if request.POST.get("post"):
            protected = []
        return deleted, model_count, set(), protected

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except self.service_errors as exc:
            self.message_user(request, str(exc), messages.ERROR)
            change_url = f"admin:{self.opts.app_label}_{self.opts.model_name}_change"
            return HttpResponseRedirect(reverse(change_url, args=[object_id]))

    def log_deletions(self, request, queryset):
        # Logged once the service deleted each object: a refused delete is no deletion.
        return None

    def delete_model(self, request, obj):
        self.delete_through_service(request, obj)
        super().log_deletions(request, [obj])

    def delete_queryset(self, request, queryset):
        deleted = refused = 0
        for obj in queryset:
            try:
                self.delete_through_service(request, obj)
            except self.service_errors as exc:
                self.message_user(request, f"{obj} was not deleted: {exc}", messages.ERROR)
                refused += 1
                continue
            super().log_deletions(request, [obj])
            deleted += 1
        if refused:
            request._service_deletes = (deleted, deleted + refused)

    def message_user(self, request, message, level=messages.INFO, *args, **kwargs):
        # `delete_selected` announces "Successfully deleted N" for the whole selection once
        # delete_queryset returns; with refusals that count is wrong, so say what happened.
        outcome = request.__dict__.pop("_service_deletes", None)
        if outcome is not None and level == messages.SUCCESS:
            deleted, selected = outcome
            message = f"Deleted {deleted} of {selected} selected {self.opts.verbose_name_plural}."
            level = messages.WARNING
        super().message_user(request, message, level, *args, **kwargs)


class CredentialAdmin(ServiceBackedAdmin):
    """Credentials are made by their service, and the secret is shown once, on the page that
    answers the creation: only its hash is stored, and it never goes into a message (messages
    travel back in a cookie or sit in the session).

    A credential is never edited or deleted here, only revoked through its service: a saved
    change form used to go through the create service and mint a second credential, leaving the
    first one working, and a deleted row would take its audit trail along.
    """

    # What the created credential is for and how to use it, shown beside the secret.
    usage = ""
    actions = ["revoke_selected"]

    def credential_revoke(self, request, credential: Model) -> None:
        """Revoke one credential through its service (idempotent)."""
        raise NotImplementedError

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_revoke_permission(self, request) -> bool:
        # Whoever may issue a credential here may revoke one they can see.
        return self.has_add_permission(request)

    @admin.action(description="Revoke selected credentials", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        revoked = 0
        for credential in queryset:
            if credential.revoked_at is None:
                self.credential_revoke(request, credential)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} of {len(queryset)} selected.")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        obj.secret_shown_once = form.secret

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{self.opts.verbose_name.capitalize()} created",
            "credential": obj,
            "secret": obj.secret_shown_once,
            "usage": self.usage,
        }
        return TemplateResponse(request, "admin/credential_created.html", context)


def form_changes(form, fields) -> dict:
    """The changed form fields among `fields`, keyed by attname (`assignee_agent_id`)."""
    changes = {}
    for name in form.changed_data:
        if name not in fields:
            continue
        field = form._meta.model._meta.get_field(name)
        value = form.cleaned_data[name]
        if field.is_relation:
            changes[field.attname] = value.pk if value is not None else None
        else:
            changes[field.attname] = value
    return changes


def actor_of(request) -> dict:
    return {"actor_type": "user", "actor_id": str(request.user.pk)}
