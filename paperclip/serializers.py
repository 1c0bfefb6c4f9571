"""Serializers of the core app, and the camelCase convention shared by every app's API.

JSON keys are the reference's camelCase (`issuePrefix`, `createdAt`), so agents and scripts written
for the reference read our responses unchanged; Python and the database keep snake_case.
"""

from __future__ import annotations

import copy
from datetime import UTC

from django.conf import settings
from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

from paperclip.models import ActivityLog, BoardApiToken, Company


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# Fields whose output depends on nothing but the attribute they read: their to_representation
# can be called on fields built and bound once per serializer class.
_PLAIN_OUTPUT_FIELDS = (
    serializers.BooleanField,
    serializers.CharField,
    serializers.ChoiceField,
    serializers.DateField,
    serializers.DateTimeField,
    serializers.DecimalField,
    serializers.DictField,
    serializers.FloatField,
    serializers.IntegerField,
    serializers.JSONField,
    serializers.ListField,
    serializers.UUIDField,
)
_CONTEXT_OUTPUT_FIELDS = (
    serializers.FileField,
    serializers.SerializerMethodField,
    serializers.HiddenField,
)


class CamelModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose keys are the camelCase of the model's field names.

    ModelSerializer introspects the model for every instance it makes, and DRF copies every
    field for every serializer instance so that it can be bound to it: for a small API read
    that was most of its CPU. The fields depend only on the class, so they are built once per
    class; when every readable field is a plain one (it reads one attribute and never the
    context), instances of the model are written through those fields directly, with the
    same values as DRF's own loop. Anything else takes DRF's path with a copy of the fields.
    """

    def get_fields(self):
        cls = type(self)
        prototype = cls.__dict__.get("_camel_fields_prototype")
        if prototype is None:
            prototype = {}
            for name, field in super().get_fields().items():
                key = camel(name)
                if key != name and field.source is None:
                    # Field.__deepcopy__ rebuilds a field from its constructor arguments.
                    field._kwargs["source"] = name
                    field.source = name
                prototype[key] = field
            cls._camel_fields_prototype = prototype
        return copy.deepcopy(prototype)

    def to_representation(self, instance):
        plan = _output_plan(type(self))
        if plan is None or not isinstance(instance, self.Meta.model):
            return super().to_representation(instance)
        data = {}
        for key, attribute, represent in plan:
            value = getattr(instance, attribute)
            data[key] = None if value is None else represent(value)
        return data


def _output_plan(cls: type[CamelModelSerializer]) -> list[tuple] | None:
    """(key, attribute, to_representation) per readable field, from fields bound once to a
    serializer of the class; None when a field needs more than its attribute."""
    if "_output_plan" in cls.__dict__:
        return cls._output_plan
    plan = []
    for key, field in cls().fields.items():
        if field.write_only:
            continue
        plain = isinstance(field, _PLAIN_OUTPUT_FIELDS) and not isinstance(
            field, _CONTEXT_OUTPUT_FIELDS
        )
        if not plain or len(field.source_attrs) != 1:
            plan = None
            break
        plan.append((key, field.source_attrs[0], _representer(field)))
    cls._output_plan = plan
    return plan


def _representer(field: serializers.Field):
    """field.to_representation, with a shortcut for the API's most common value: DRF converts a
    datetime to the current time zone and writes it in ISO 8601 with Z for UTC; the project's
    time zone is UTC and the API never activates another, so a UTC datetime is written as is."""
    represent = field.to_representation
    iso_utc = (
        isinstance(field, serializers.DateTimeField)
        and not hasattr(field, "timezone")
        and getattr(field, "format", api_settings.DATETIME_FORMAT) == ISO_8601
        and settings.USE_TZ
        and settings.TIME_ZONE == "UTC"
    )
    if not iso_utc:
        return represent

    def utc_iso_8601(value):
        if getattr(value, "tzinfo", None) is UTC:
            return value.isoformat()[:-6] + "Z"
        return represent(value)

    return utc_iso_8601


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    details = serializers.JSONField(allow_null=True, required=False)


class CompanySerializer(CamelModelSerializer):
    class Meta:
        model = Company
        fields = [
            "id",
            "name",
            "description",
            "status",
            "pause_reason",
            "paused_at",
            "issue_prefix",
            "issue_counter",
            "budget_monthly_cents",
            "spent_monthly_cents",
            "require_board_approval_for_new_agents",
            "brand_color",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class CompanyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(
        max_length=10_000, allow_null=True, allow_blank=True, required=False
    )
    issuePrefix = serializers.RegexField(
        r"^[A-Za-z][A-Za-z0-9]{0,15}$",
        source="issue_prefix",
        help_text="Letters and digits, starting with a letter; issue identifiers are PREFIX-N.",
    )
    requireBoardApprovalForNewAgents = serializers.BooleanField(
        source="require_board_approval_for_new_agents", default=True
    )


class CompanyUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(
        max_length=10_000, allow_null=True, allow_blank=True, required=False
    )
    status = serializers.ChoiceField(choices=Company.Status.choices, required=False)
    pauseReason = serializers.CharField(
        source="pause_reason", max_length=2000, allow_null=True, allow_blank=True, required=False
    )
    budgetMonthlyCents = serializers.IntegerField(
        source="budget_monthly_cents", min_value=0, max_value=2**31 - 1, required=False
    )
    requireBoardApprovalForNewAgents = serializers.BooleanField(
        source="require_board_approval_for_new_agents", required=False
    )
    brandColor = serializers.RegexField(
        r"^#[0-9A-Fa-f]{6}$", source="brand_color", allow_null=True, required=False
    )


class ActivitySerializer(CamelModelSerializer):
    companyId = serializers.UUIDField(source="company_id", read_only=True)
    agentId = serializers.UUIDField(source="agent_id", read_only=True, allow_null=True)
    runId = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)

    class Meta:
        model = ActivityLog
        fields = [
            "id",
            "companyId",
            "actor_type",
            "actor_id",
            "action",
            "entity_type",
            "entity_id",
            "agentId",
            "runId",
            "details",
            "created_at",
        ]
        read_only_fields = fields


class ActivityQuerySerializer(serializers.Serializer):
    agentId = serializers.UUIDField(required=False)
    entityType = serializers.CharField(max_length=64, required=False)
    entityId = serializers.CharField(max_length=200, required=False)


class BoardTokenSerializer(CamelModelSerializer):
    class Meta:
        model = BoardApiToken
        fields = [
            "id",
            "name",
            "token_prefix",
            "created_at",
            "last_used_at",
            "revoked_at",
            "expires_at",
        ]
        read_only_fields = fields


class BoardTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class BoardTokenCreatedSerializer(BoardTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret; shown only once.")

    class Meta(BoardTokenSerializer.Meta):
        fields = [*BoardTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class BoardApiKeyCreateSerializer(serializers.Serializer):
    """Paperclip's `POST /api/board-api-keys` body."""

    name = serializers.CharField(max_length=120, default="paperclipai cli")
    expiresAt = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the key stops working; null: never; absent: in 30 days.",
    )
    requestedCompanyId = serializers.UUIDField(
        required=False, allow_null=True, help_text="A company the key is meant for (checked)."
    )

    def validate_expiresAt(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class BoardApiKeyRevokedSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    keyId = serializers.UUIDField()


class MembershipSerializer(serializers.Serializer):
    companyId = serializers.UUIDField(source="company_id")
    membershipRole = serializers.CharField(source="role")
    status = serializers.CharField(default="active")


class BoardUserSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    email = serializers.CharField(allow_blank=True)


class CliAuthMeSerializer(serializers.Serializer):
    """Who the board caller is (Paperclip's `GET /api/cli-auth/me`, the CLI's `whoami`)."""

    user = BoardUserSerializer()
    userId = serializers.CharField()
    isInstanceAdmin = serializers.BooleanField()
    companyIds = serializers.ListField(child=serializers.UUIDField())
    memberships = MembershipSerializer(many=True)
    source = serializers.ChoiceField(choices=["session", "board_key"])
    keyId = serializers.UUIDField(allow_null=True)


class ApiRootSerializer(serializers.Serializer):
    docs = serializers.URLField()
    schema = serializers.URLField()
    health = serializers.URLField()
