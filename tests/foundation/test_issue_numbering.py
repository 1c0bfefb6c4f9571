import threading

import pytest
from django.db import IntegrityError, connection

from issues.models import Issue
from issues.services import issue_create
from tests.factories import make_company


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
def test_concurrent_issue_creation_yields_gapless_unique_numbers():
    company = make_company(issue_prefix="CONC")
    threads_count, per_thread = 8, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def create_many() -> None:
        try:
            start.wait()
            for i in range(per_thread):
                issue_create(company_id=company.id, title=f"issue {i}")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create_many) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = threads_count * per_thread
    numbers = sorted(Issue.objects.filter(company=company).values_list("issue_number", flat=True))
    assert numbers == list(range(1, total + 1))
    identifiers = set(Issue.objects.filter(company=company).values_list("identifier", flat=True))
    assert identifiers == {f"CONC-{n}" for n in range(1, total + 1)}
    company.refresh_from_db()
    assert company.issue_counter == total


@pytest.mark.django_db
def test_failed_issue_creation_does_not_use_up_a_number():
    company = make_company(issue_prefix="GAP")
    issue_create(company_id=company.id, title="first")
    with pytest.raises(IntegrityError):
        issue_create(company_id=company.id, title="bad", status="not-a-status")
    second = issue_create(company_id=company.id, title="second")
    assert second.identifier == "GAP-2"
