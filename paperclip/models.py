import uuid
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# The pause reason of a company or an agent whose monthly spend reached its budget (the
# reference's pauseReason "budget"); other pauses carry the words of whoever paused.
BUDGET_PAUSE_REASON = "budget"


def spend_month_of(moment: datetime) -> date:
    """The month a cost at `moment` counts for: the first day of its UTC month."""
    return moment.astimezone(UTC).date().replace(day=1)


def spend_under_budget(month: date) -> Q:
    """Rows (companies or agents: their spend fields are alike) with no budget, or whose spend
    of `month` is under it (a spend of an earlier month counts as none)."""
    return (
        Q(budget_monthly_cents=0)
        | Q(spend_month__isnull=True)
        | Q(spend_month__lt=month)
        | Q(spent_monthly_cents__lt=F("budget_monthly_cents"))
    )


class Company(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        ARCHIVED = "archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.TextField()
    description = models.TextField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    pause_reason = models.TextField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    issue_prefix = models.CharField(max_length=16, unique=True, default="PAP")
    # Incremented with UPDATE ... RETURNING inside the creating transaction: gapless numbers.
    issue_counter = models.IntegerField(default=0)
    # 0: no budget. spent_monthly_cents is the spend of the month (its first day, UTC) in
    # spend_month, kept by SQL increments as runs' costs are recorded; a later month starts at 0.
    budget_monthly_cents = models.IntegerField(default=0)
    spent_monthly_cents = models.IntegerField(default=0)
    spend_month = models.DateField(null=True, blank=True)
    require_board_approval_for_new_agents = models.BooleanField(default=True)
    brand_color = models.CharField(max_length=32, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "companies"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["active", "paused", "archived"]),
                name="company_status_valid",
            ),
            models.CheckConstraint(condition=Q(issue_counter__gte=0), name="company_counter_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.issue_prefix})"

    def monthly_spend_cents(self, month: date) -> int:
        """What the company spent in `month` (a first day); 0 when its spend is of an earlier
        one."""
        return self.spent_monthly_cents if self.spend_month == month else 0

    def budget_reached(self, month: date) -> bool:
        """Whether a budget is set and the spend of `month` has reached it."""
        budget = self.budget_monthly_cents
        return budget > 0 and self.monthly_spend_cents(month) >= budget

    @property
    def is_budget_paused(self) -> bool:
        """Whether the company is paused because its monthly budget was reached."""
        return self.status == self.Status.PAUSED and self.pause_reason == BUDGET_PAUSE_REASON


class CompanyMembership(models.Model):
    """A Django user on a company's board; instance admins (superusers) see every company."""

    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="company_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["company", "user"], name="membership_company_user_uniq"
            ),
            models.CheckConstraint(
                condition=Q(role__in=["owner", "member"]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.company}"


class BoardApiToken(models.Model):
    """A board user's personal API token for scripts; only its SHA-256 is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=200)
    token_prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # After this the token no longer authenticates; None: it never expires.
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"


class AuthFailureCounter(models.Model):
    """Recent failed authentications of one subject (`api-client:<address>`), shared by every
    worker and host; written only by paperclip.services.auth_failure_record.

    The subject is locked while `failures` reached the limit and the last failure is younger
    than the lockout window (paperclip.throttle); a failure after the window starts a new count.
    """

    subject = models.CharField(primary_key=True, max_length=200)
    failures = models.PositiveIntegerField()
    # Indexed for the clean-up of counters whose window has passed.
    last_failure_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.subject}: {self.failures} failure(s)"


class ActivityLog(models.Model):
    class ActorType(models.TextChoices):
        USER = "user"
        AGENT = "agent"
        SYSTEM = "system"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: activity_company_created_idx starts with it.
    company = models.ForeignKey(
        Company, on_delete=models.CASCADE, related_name="activity", db_index=False
    )
    actor_type = models.CharField(max_length=16, choices=ActorType.choices, default="system")
    actor_id = models.TextField()
    action = models.TextField()
    entity_type = models.TextField()
    entity_id = models.TextField()
    agent = models.ForeignKey(
        "heartbeat.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    run = models.ForeignKey(
        "heartbeat.HeartbeatRun",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="activity",
    )
    details = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)

    class Meta:
        verbose_name_plural = "activity log"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["company", "created_at"], name="activity_company_created_idx"),
            # The console's activity list and date hierarchy across all companies (instance admins).
            models.Index(fields=["created_at"], name="activity_created_idx"),
            models.Index(fields=["entity_type", "entity_id"], name="activity_entity_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(actor_type__in=["user", "agent", "system"]),
                name="activity_actor_type_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.entity_type}:{self.entity_id}"


class CompanySkill(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="skills")
    key = models.TextField()
    slug = models.TextField()
    name = models.TextField()
    description = models.TextField(null=True, blank=True)
    markdown = models.TextField()
    source_type = models.TextField(default="local_path")
    source_locator = models.TextField(null=True, blank=True)
    source_ref = models.TextField(null=True, blank=True)
    trust_level = models.TextField(default="markdown_only")
    compatibility = models.TextField(default="compatible")
    file_inventory = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["company", "key"], name="skill_company_key_uniq"),
        ]
        indexes = [models.Index(fields=["company", "name"], name="skill_company_name_idx")]

    def __str__(self) -> str:
        return self.key
