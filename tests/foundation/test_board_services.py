"""The core app's services for what the console and seed_demo used to write themselves: board
memberships, company skills, company deletion, and a board token's last use."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from heartbeat.models import Agent
from paperclip.models import ActivityLog, BoardApiToken, Company, CompanyMembership, CompanySkill
from paperclip.services import (
    CompanyDeleteRefused,
    CompanyMembershipError,
    CompanySkillInvalid,
    board_token_create,
    board_token_touch,
    company_create,
    company_delete,
    company_membership_add,
    company_membership_ensure,
    company_membership_remove,
    company_membership_role_set,
    company_skill_create,
    company_skill_delete,
    company_skill_update,
)
from tests.factories import make_agent, make_company, make_run

ACTOR = {"actor_type": "user", "actor_id": "7"}
SKILL = {"key": "deploy", "slug": "deploy", "name": "Deploy", "markdown": "# Deploy"}


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("dana", password="pw-dana-123")


@pytest.mark.django_db
def test_adding_a_member_twice_is_refused(user):
    company = make_company()
    company_membership_add(company_id=company.pk, user_id=user.pk, **ACTOR)

    with pytest.raises(CompanyMembershipError, match="already on the company's board"):
        company_membership_add(company_id=company.pk, user_id=user.pk, role="owner", **ACTOR)

    assert list(CompanyMembership.objects.values_list("role", flat=True)) == ["member"]


@pytest.mark.django_db
def test_an_unknown_role_is_refused_before_anything_is_written(user):
    company = make_company()

    with pytest.raises(CompanyMembershipError, match="Unknown board role 'admin'"):
        company_membership_add(company_id=company.pk, user_id=user.pk, role="admin", **ACTOR)

    assert not CompanyMembership.objects.exists()
    assert not ActivityLog.objects.filter(action="company.member_added").exists()


@pytest.mark.django_db
def test_ensuring_a_membership_keeps_an_existing_role(user):
    company = make_company()
    company_membership_add(company_id=company.pk, user_id=user.pk, **ACTOR)

    kept = company_membership_ensure(company_id=company.pk, user_id=user.pk, role="owner")

    assert kept.role == "member"
    assert ActivityLog.objects.filter(action="company.member_added").count() == 1


@pytest.mark.django_db
def test_setting_the_role_a_member_has_records_nothing(user):
    company = make_company()
    membership = company_membership_add(company_id=company.pk, user_id=user.pk, **ACTOR)

    company_membership_role_set(membership_id=membership.pk, role="member", **ACTOR)
    company_membership_role_set(membership_id=membership.pk, role="owner", **ACTOR)

    assert CompanyMembership.objects.get().role == "owner"
    changes = ActivityLog.objects.filter(action="company.member_role_changed")
    assert [row.details["role"] for row in changes] == ["owner"]


@pytest.mark.django_db
def test_removing_a_member_records_who_left(user):
    company = make_company()
    membership = company_membership_add(company_id=company.pk, user_id=user.pk, **ACTOR)

    company_membership_remove(membership_id=membership.pk, **ACTOR)

    assert not CompanyMembership.objects.exists()
    removed = ActivityLog.objects.get(action="company.member_removed")
    assert (removed.details["userId"], removed.actor_id) == (str(user.pk), "7")


@pytest.mark.django_db
def test_seed_demo_puts_the_board_login_on_an_existing_demo_company(user, monkeypatch):
    monkeypatch.setenv("PAPERCLIP_ADMIN_USER", user.username)
    company = company_create(name="Demo Company", issue_prefix="DEMO")

    call_command("seed_demo")

    assert CompanyMembership.objects.get(company=company, user=user).role == "owner"
    added = ActivityLog.objects.get(action="company.member_added")
    assert (added.actor_type, added.actor_id) == ("system", "seed_demo")


@pytest.mark.django_db
def test_a_second_skill_with_the_same_key_is_refused():
    company = make_company()
    company_skill_create(company_id=company.pk, fields=SKILL, **ACTOR)

    with pytest.raises(CompanySkillInvalid, match="already has a skill with key 'deploy'"):
        company_skill_create(company_id=company.pk, fields={**SKILL, "name": "Other"}, **ACTOR)

    assert CompanySkill.objects.count() == 1


@pytest.mark.django_db
def test_the_same_skill_key_in_another_company_is_fine():
    company_skill_create(company_id=make_company().pk, fields=SKILL, **ACTOR)
    company_skill_create(company_id=make_company().pk, fields=SKILL, **ACTOR)

    assert CompanySkill.objects.count() == 2


@pytest.mark.django_db
def test_a_skill_update_that_blanks_its_markdown_is_refused_and_kept():
    skill = company_skill_create(company_id=make_company().pk, fields=SKILL, **ACTOR)

    with pytest.raises(CompanySkillInvalid, match="non-blank markdown"):
        company_skill_update(skill_id=skill.pk, changes={"markdown": "  "}, **ACTOR)

    assert CompanySkill.objects.get().markdown == "# Deploy"
    assert not ActivityLog.objects.filter(action="company.skill_updated").exists()


@pytest.mark.django_db
def test_deleting_a_skill_is_recorded():
    skill = company_skill_create(company_id=make_company().pk, fields=SKILL, **ACTOR)

    company_skill_delete(skill_id=skill.pk, **ACTOR)

    assert not CompanySkill.objects.exists()
    assert ActivityLog.objects.get(action="company.skill_deleted").details["key"] == "deploy"


@pytest.mark.django_db
def test_a_company_with_a_queued_run_is_not_deleted():
    agent = make_agent()
    make_run(agent, status="queued")

    with pytest.raises(CompanyDeleteRefused, match="it has 1 heartbeat run, kept"):
        company_delete(company_id=agent.company_id, **ACTOR)

    assert Company.objects.filter(pk=agent.company_id).exists()
    assert Agent.objects.filter(pk=agent.pk).exists()


@pytest.mark.django_db
def test_a_company_that_never_ran_is_deleted_with_its_agents_and_skills():
    agent = make_agent()
    company_skill_create(company_id=agent.company_id, fields=SKILL, **ACTOR)

    company_delete(company_id=agent.company_id, **ACTOR)

    assert not Company.objects.exists()
    assert not Agent.objects.exists() and not CompanySkill.objects.exists()


@pytest.mark.django_db
def test_a_board_token_used_again_within_the_resolution_is_not_written(user):
    token, _ = board_token_create(user_id=user.pk, name="laptop")
    recent = timezone.now() - timedelta(minutes=1)
    BoardApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)

    board_token_touch(token_id=token.pk, last_used_at=recent)

    assert BoardApiToken.objects.get(pk=token.pk).last_used_at == recent


@pytest.mark.django_db
def test_a_board_token_used_after_the_resolution_gets_a_new_stamp(user):
    token, _ = board_token_create(user_id=user.pk, name="laptop")
    old = timezone.now() - timedelta(minutes=6)
    BoardApiToken.objects.filter(pk=token.pk).update(last_used_at=old)

    board_token_touch(token_id=token.pk, last_used_at=old)

    assert BoardApiToken.objects.get(pk=token.pk).last_used_at > old
