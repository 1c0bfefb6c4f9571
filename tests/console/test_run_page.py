"""The run page answers "why is it stuck and what happens next" without a shell."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from heartbeat import selectors
from heartbeat.models import HeartbeatRunEvent
from heartbeat.run_log import run_log_path
from paperclip.admin import EstimatedCountPaginator
from tests.factories import make_agent, make_run


def _run_page(client, run):
    response = client.get(reverse("admin:heartbeat_heartbeatrun_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_lost_run_page_links_its_retry_and_says_it_is_queued(admin_client_, agent_a):
    lost = make_run(agent_a, status="failed", error_code="process_lost")
    retry = make_run(agent_a, status="queued", retry_of_run=lost, process_loss_retry_count=1)
    page = _run_page(admin_client_, lost)
    assert reverse("admin:heartbeat_heartbeatrun_change", args=[retry.pk]) in page
    assert f"automatic retry {str(retry.pk)[:8]} is queued" in page


@pytest.mark.django_db
def test_lost_run_without_retry_says_the_budget_is_used(admin_client_, agent_a):
    lost = make_run(agent_a, status="failed", error_code="process_lost")
    assert "no automatic retry" in _run_page(admin_client_, lost)


@pytest.mark.django_db
def test_running_run_with_expired_lease_is_called_orphaned(admin_client_, agent_a):
    run = make_run(
        agent_a,
        status="running",
        owner_host="gone-host",
        owner_pid=12,
        lease_expires_at=timezone.now() - timedelta(minutes=3),
    )
    page = _run_page(admin_client_, run)
    assert "its owner&#x27;s lease expired" in page
    list_page = admin_client_.get(reverse("admin:heartbeat_heartbeatrun_changelist")).content
    assert b"expired 3m" in list_page


@pytest.mark.django_db
def test_run_page_says_which_supervisor_watches_the_run_since_when(admin_client_, agent_a):
    since = timezone.now() - timedelta(minutes=4)
    run = make_run(
        agent_a,
        status="running",
        owner_host="host-a",
        owner_pid=77,
        owner_since=since,
        shim_pid=76,
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    page = _run_page(admin_client_, run)
    watcher = f"run supervisor pid 77 on host-a, since {since:%Y-%m-%d %H:%M:%S} UTC"
    assert f"Running; watched by the {watcher}" in page
    assert "76" in page.split("Shim pid")[1][:200]


@pytest.mark.django_db
def test_detached_run_shows_when_its_grace_ends(admin_client_, agent_a, settings):
    settings.PAPERCLIP_HEARTBEAT = {"detached_grace_sec": 600}
    detached_at = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    run = make_run(
        agent_a, status="running", error_code="process_detached", detached_at=detached_at
    )
    grace_end = detached_at + timedelta(seconds=600)
    assert f"{grace_end:%Y-%m-%d %H:%M:%S} UTC" in _run_page(admin_client_, run)


@pytest.mark.django_db
def test_run_page_shows_newest_events_inline(admin_client_, agent_a):
    run = make_run(agent_a, status="running", event_seq=60)
    HeartbeatRunEvent.objects.bulk_create(
        HeartbeatRunEvent(
            company_id=agent_a.company_id,
            run=run,
            agent=agent_a,
            seq=seq,
            event_type="lifecycle",
            message=f"event number {seq:03d}",
        )
        for seq in range(1, 61)
    )
    page = _run_page(admin_client_, run)
    assert "event number 060" in page
    assert "event number 011" in page
    assert "event number 010" not in page


@pytest.mark.django_db
def test_run_page_shows_the_log_tail(admin_client_, agent_a, settings, tmp_path):
    settings.PAPERCLIP_HOME = tmp_path
    log = tmp_path / "run-logs" / "c" / "a" / "r.ndjson"
    log.parent.mkdir(parents=True)
    lines = [
        json.dumps({"ts": f"t{i}", "stream": "stdout", "chunk": f"line {i}\n"}) for i in range(500)
    ]
    log.write_text("\n".join(lines) + "\n")
    run = make_run(agent_a, status="running", log_ref="c/a/r.ndjson")
    page = _run_page(admin_client_, run)
    assert "t499 stdout line 499" in page
    assert "line 100\n" not in page


@pytest.mark.django_db
def test_run_page_shows_a_log_written_under_the_configured_log_dir(
    admin_client_, agent_a, settings, tmp_path
):
    settings.PAPERCLIP_HOME = tmp_path / "home"
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(tmp_path / "elsewhere")}
    run = make_run(agent_a, status="running", log_ref="c/a/r.ndjson")
    log = run_log_path(run.log_ref)
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"ts": "t1", "stream": "stdout", "chunk": "hello\n"}) + "\n")
    page = _run_page(admin_client_, run)
    assert "t1 stdout hello" in page
    assert "log file not found" not in page


@pytest.mark.django_db
def test_log_tail_of_a_multi_gigabyte_log_reads_only_its_end(agent_a, settings, tmp_path):
    settings.PAPERCLIP_HOME = tmp_path
    log = tmp_path / "run-logs" / "huge.ndjson"
    log.parent.mkdir(parents=True)
    with open(log, "wb") as handle:
        # A sparse 4 GiB file: reading it whole would take minutes and all the memory.
        handle.truncate(4 * 1024**3)
        handle.seek(0, 2)
        for i in range(200):
            handle.write(json.dumps({"ts": "t", "stream": "stderr", "chunk": f"x{i}\n"}).encode())
            handle.write(b"\n")
    run = make_run(agent_a, status="running", log_ref="huge.ndjson")
    tail = selectors.run_log_tail(run, max_lines=50)
    assert tail.lines[-1] == "t stderr x199"
    assert len(tail.lines) == 50
    assert tail.truncated
    assert tail.size > 4 * 1024**3


@pytest.mark.django_db
def test_log_tail_refuses_a_path_outside_the_log_root(agent_a, settings, tmp_path):
    settings.PAPERCLIP_HOME = tmp_path / "home"
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    run = make_run(agent_a, status="failed", log_ref="../../secret.txt")
    tail = selectors.run_log_tail(run)
    assert tail.lines == ()
    assert tail.note == "log outside the log directory"


@pytest.mark.django_db
def test_unfiltered_big_table_is_counted_from_planner_statistics(agent_a, monkeypatch):
    monkeypatch.setattr("paperclip.admin.paging._EXACT_COUNT_BELOW", 1)
    run = make_run(agent_a, status="running")
    HeartbeatRunEvent.objects.bulk_create(
        HeartbeatRunEvent(
            company_id=agent_a.company_id, run=run, agent=agent_a, seq=seq, event_type="x"
        )
        for seq in range(1, 301)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE heartbeat_heartbeatrunevent")
    with CaptureQueriesContext(connection) as queries:
        count = EstimatedCountPaginator(HeartbeatRunEvent.objects.all(), 50).count
    assert count == 300
    assert "COUNT(" not in queries[-1]["sql"].upper()
    with CaptureQueriesContext(connection) as queries:
        estimated = EstimatedCountPaginator(HeartbeatRunEvent.objects.filter(seq__gte=1), 50).count
    assert 250 <= estimated <= 350
    assert queries[-1]["sql"].startswith("EXPLAIN")


@pytest.mark.django_db
def test_small_filtered_result_is_counted_exactly(agent_a, monkeypatch):
    monkeypatch.setattr("paperclip.admin.paging._EXACT_COUNT_BELOW", 1000)
    run = make_run(agent_a, status="running")
    HeartbeatRunEvent.objects.bulk_create(
        HeartbeatRunEvent(
            company_id=agent_a.company_id, run=run, agent=agent_a, seq=seq, event_type="x"
        )
        for seq in range(1, 301)
    )
    filtered = EstimatedCountPaginator(HeartbeatRunEvent.objects.filter(seq__lte=10), 50)
    assert filtered.count == 10


@pytest.mark.django_db
def test_date_hierarchy_lists_months_without_scanning_distinct_dates(admin_client_, agent_a):
    for created in ["2026-03-05T10:00:00Z", "2026-05-20T10:00:00Z"]:
        run = make_run(agent_a, status="succeeded")
        type(run).objects.filter(pk=run.pk).update(created_at=created)
    url = reverse("admin:heartbeat_heartbeatrun_changelist")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(url).content.decode()
    assert not any("DISTINCT" in q["sql"] and "DATE_TRUNC" in q["sql"] for q in queries)
    assert "March 2026" in page and "April 2026" in page and "May 2026" in page
    days = admin_client_.get(url + "?created_at__year=2026&created_at__month=5").content.decode()
    assert "May 20" in days


@pytest.mark.django_db
def test_log_tail_joins_a_line_written_in_several_chunks(agent_a, settings, tmp_path):
    settings.PAPERCLIP_HOME = tmp_path
    log = tmp_path / "run-logs" / "chunks.ndjson"
    log.parent.mkdir(parents=True)
    records = [
        ("t1", "stdout", "building wid"),
        ("t2", "stderr", "warning: slow\n"),
        ("t3", "stdout", "gets\nall done\nexit"),
    ]
    log.write_text(
        "".join(json.dumps({"ts": t, "stream": s, "chunk": c}) + "\n" for t, s, c in records)
    )
    run = make_run(agent_a, status="running", log_ref="chunks.ndjson")
    assert selectors.run_log_tail(run).lines == (
        "t2 stderr warning: slow",
        "t1 stdout building widgets",
        "t3 stdout all done",
        "t3 stdout exit",
    )


@pytest.mark.django_db
def test_run_page_shows_times_to_the_second_and_how_long_it_took(admin_client_, agent_a):
    started = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    run = make_run(
        agent_a,
        status="succeeded",
        started_at=started,
        finished_at=started + timedelta(seconds=2, milliseconds=400),
    )
    page = _run_page(admin_client_, run)
    assert started.strftime("%Y-%m-%d %H:%M:%S") in page
    assert "2.4s" in page


@pytest.mark.django_db
def test_succeeded_run_page_offers_no_retry(admin_client_, agent_a):
    assert "Retry now" not in _run_page(admin_client_, make_run(agent_a, status="succeeded"))
    assert "Retry now" in _run_page(admin_client_, make_run(agent_a, status="failed"))


@pytest.mark.django_db
def test_adapter_filter_lists_each_adapter_type_once(admin_client_, agent_a):
    for name in ("b", "c"):
        make_run(make_agent(agent_a.company, name=name), status="failed")
    page = admin_client_.get(reverse("admin:heartbeat_heartbeatrun_changelist")).content.decode()
    assert page.count("?adapter=process") == 1
