"""Reading what the coding-agent CLIs print (pure: recorded-format lines in, facts out),
reading the agent's lines back out of a run log in bounded memory, and a log that cannot be
read."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from heartbeat.adapters import adapter_output_parser
from heartbeat.adapters.cli_output import (
    SUMMARY_MAX_CHARS,
    ClaudeStreamJsonParser,
    CliOutput,
    CodexJsonParser,
    TokenUsage,
    UsageBasis,
)
from heartbeat.run_log import RunLogLines, RunTranscript, run_log_path
from heartbeat.services import run_finalize_from_report
from tests.factories import make_agent, make_run
from tests.fake_cli import recorded

SESSION = "4f0c1e8a-7b7c-4d2b-9b1e-2f6d1c3b5a90"
THREAD = "0199a213-81c0-7800-8aa1-bbab2a035a53"


def _feed(parser, events, *, stderr=()) -> CliOutput:
    for event in events:
        parser.feed("stdout", event if isinstance(event, str) else json.dumps(event))
    for line in stderr:
        parser.feed("stderr", line)
    return parser.result()


def _claude_run(**result) -> list[dict]:
    values = {
        "result": "Fixed the typo.",
        "cost_usd": 0.0421,
        "input_tokens": 12,
        "cached_input_tokens": 28000,
        "output_tokens": 240,
        **result,
    }
    return [
        recorded.claude_init(SESSION),
        recorded.claude_assistant_text(SESSION, "Looking."),
        *recorded.claude_tool_round(SESSION, "ls", "README.md\n"),
        recorded.claude_result(SESSION, **values),
    ]


def test_claude_stream_gives_session_model_usage_exact_cost_and_result_text():
    output = _feed(ClaudeStreamJsonParser(), _claude_run())

    assert (output.cli, output.provider, output.usage_basis) == ("claude", "anthropic", "per_run")
    assert (output.session_id, output.model) == (SESSION, recorded.CLAUDE_MODEL)
    assert output.usage == TokenUsage(
        input_tokens=12,
        cached_input_tokens=28000,
        output_tokens=240,
        cache_creation_input_tokens=1864,
    )
    assert output.cost_usd == Decimal("0.0421")
    assert output.cost_cents == 4
    assert output.summary == "Fixed the typo."
    assert (output.failed, output.error, output.unknown_session) == (False, None, False)
    assert output.details == {
        "subtype": "success",
        "isError": False,
        "numTurns": 3,
        "durationMs": 18734,
    }
    assert (output.lines, output.malformed_lines) == (5, 0)


def test_claude_run_without_a_result_keeps_its_session_and_last_assistant_text():
    events = [
        recorded.claude_init(SESSION),
        recorded.claude_assistant_text(SESSION, "First I read the issue."),
        recorded.claude_assistant_text(SESSION, "Now the fix.", message_id="msg_02"),
    ]
    output = _feed(ClaudeStreamJsonParser(), events)
    assert output.session_id == SESSION
    assert (output.usage, output.cost_usd, output.cost_cents) == (None, None, 0)
    assert output.summary == "First I read the issue.\n\nNow the fix."


def test_claude_error_result_is_a_failure_worded_as_paperclip_words_it():
    events = _claude_run(subtype="error_max_turns", is_error=True, result="Reached max turns")
    output = _feed(ClaudeStreamJsonParser(), events)
    assert output.failed
    assert output.error == "Claude run failed: subtype=error_max_turns: Reached max turns"
    assert output.usage is not None and output.cost_usd == Decimal("0.0421")


def test_claude_resume_of_an_unknown_session_is_recognised_from_its_output():
    events, message = recorded.claude_unknown_session(SESSION, new_session_id="new-one")
    output = _feed(ClaudeStreamJsonParser(), events, stderr=[message])
    assert output.unknown_session and output.failed
    assert output.details["errors"] == [message]


def test_claude_unknown_session_said_only_on_stderr_is_recognised_too():
    output = _feed(
        ClaudeStreamJsonParser(), [], stderr=[f"No conversation found with session ID: {SESSION}"]
    )
    assert output.unknown_session
    assert output.error == f"No conversation found with session ID: {SESSION}"


def test_codex_events_give_thread_cumulative_usage_and_last_agent_message():
    events = [
        recorded.codex_thread_started(THREAD),
        *recorded.codex_turn("First thought.", command="ls", output="README.md\n"),
        *recorded.codex_turn("Done: the typo is fixed.", command="git diff", output=""),
        recorded.codex_turn_completed(
            input_tokens=4800, cached_input_tokens=4000, output_tokens=240
        ),
    ]
    output = _feed(CodexJsonParser(), events)
    assert (output.cli, output.provider) == ("codex", "openai")
    assert output.usage_basis == UsageBasis.SESSION_CUMULATIVE
    assert output.session_id == THREAD
    assert output.usage == TokenUsage(
        input_tokens=4800, cached_input_tokens=4000, output_tokens=240
    )
    assert (output.cost_usd, output.model) == (None, None)
    assert output.summary == "Done: the typo is fixed."
    assert (output.failed, output.details) == (False, {"turn": "completed"})


def test_codex_failed_turn_is_a_failure_with_its_message():
    events = [
        recorded.codex_thread_started(THREAD),
        {"type": "error", "message": "stream disconnected before completion"},
        {"type": "turn.failed", "error": {"message": "Rate limit reached for gpt-5-codex"}},
    ]
    output = _feed(CodexJsonParser(), events)
    assert output.failed
    assert output.error == "Rate limit reached for gpt-5-codex"


def test_codex_resume_of_an_unknown_thread_is_recognised_from_stderr():
    output = _feed(CodexJsonParser(), [], stderr=[recorded.codex_unknown_session_stderr(THREAD)])
    assert output.unknown_session
    assert output.session_id is None


@pytest.mark.parametrize(
    "line",
    [
        "Warning: the terminal does not support colors",
        "{truncated json",
        '["not", "an", "event"]',
        '"a string"',
        "42",
        json.dumps({"type": "result", "usage": "lots", "total_cost_usd": "free", "num_turns": "x"}),
        json.dumps({"type": "assistant", "message": {"content": "not a list"}}),
        json.dumps({"type": "system", "subtype": "init", "session_id": 42, "model": ["x"]}),
        json.dumps({"type": "result", "subtype": 7, "is_error": "yes", "errors": "boom"}),
        '{"type": "result", "total_cost_usd": NaN, "usage": {"input_tokens": -5}}',
        json.dumps({"type": "result", "total_cost_usd": 1e400}),
        json.dumps({"type": "turn.completed", "usage": {"input_tokens": "many"}}),
        json.dumps({"type": "item.completed", "item": "agent_message"}),
        json.dumps({"type": "turn.failed", "error": "just a string"}),
        json.dumps({"type": "never.seen.before", "payload": {"x": 1}}),
    ],
)
@pytest.mark.parametrize("parser_class", [ClaudeStreamJsonParser, CodexJsonParser])
def test_unexpected_lines_never_stop_the_parse_or_spoil_the_real_events(parser_class, line):
    parser = parser_class()
    parser.feed("stdout", line)
    if parser_class is ClaudeStreamJsonParser:
        output = _feed(parser, _claude_run())
        assert (output.session_id, output.cost_usd) == (SESSION, Decimal("0.0421"))
        assert output.summary == "Fixed the typo."
    else:
        events = [
            recorded.codex_thread_started(THREAD),
            *recorded.codex_turn("Done.", command="ls", output=""),
            recorded.codex_turn_completed(input_tokens=10, cached_input_tokens=0, output_tokens=1),
        ]
        output = _feed(parser, events)
        assert (output.session_id, output.summary) == (THREAD, "Done.")
    assert output.usage is not None


def test_lines_that_are_not_events_are_counted_as_malformed():
    parser = ClaudeStreamJsonParser()
    for line in ("plain text", "[1]", "", "   ", json.dumps({"type": "unknown"})):
        parser.feed("stdout", line)
    output = parser.result()
    assert (output.lines, output.malformed_lines) == (3, 2)


def test_nonsense_cost_is_no_cost():
    events = _claude_run(cost_usd=float("nan"))
    assert _feed(ClaudeStreamJsonParser(), events).cost_usd is None


@pytest.mark.parametrize(
    ("cost_usd", "cents"), [(0.004, 0), (0.005, 1), (0.125, 13), (1.2345, 123), (0, 0)]
)
def test_cost_in_cents_rounds_half_up_from_the_exact_reported_dollars(cost_usd, cents):
    output = _feed(ClaudeStreamJsonParser(), _claude_run(cost_usd=cost_usd))
    assert output.cost_cents == cents


def test_summary_is_capped():
    output = _feed(ClaudeStreamJsonParser(), _claude_run(result="x" * (SUMMARY_MAX_CHARS + 10)))
    assert len(output.summary) == SUMMARY_MAX_CHARS and output.summary.endswith("…")


def test_usage_since_an_earlier_total_of_the_same_session():
    total = TokenUsage(input_tokens=4800, cached_input_tokens=4000, output_tokens=240)
    earlier = TokenUsage(input_tokens=2400, cached_input_tokens=2000, output_tokens=120)
    assert total.covers(earlier) and not earlier.covers(total)
    assert total.minus(earlier) == earlier


@pytest.mark.parametrize(
    ("adapter_type", "parser_class"),
    [
        ("claude_local", ClaudeStreamJsonParser),
        ("codex_local", CodexJsonParser),
        ("process", None),
        ("http", None),
        ("gemini_local", None),
    ],
)
def test_each_adapter_names_the_parser_of_its_output(adapter_type, parser_class):
    parser = adapter_output_parser(adapter_type)
    assert type(parser) is parser_class if parser_class else parser is None


# --- Reading the agent's lines back from the run log --------------------------------------------


@pytest.fixture
def log_ref(settings, tmp_path):
    settings.PAPERCLIP_HEARTBEAT = {"run_log_dir": str(tmp_path)}
    ref = "company/agent/run.ndjson"
    run_log_path(ref).parent.mkdir(parents=True)
    return ref


def _write_chunks(log_ref: str, chunks, *, newline_at_end: bool = True) -> None:
    text = "".join(
        json.dumps({"ts": "2026-01-01T00:00:00+00:00", "stream": stream, "chunk": chunk}) + "\n"
        for stream, chunk in chunks
    )
    with run_log_path(log_ref).open("a") as log:
        log.write(text if newline_at_end else text.rstrip("\n"))


def test_lines_split_across_chunks_and_streams_come_back_whole(log_ref):
    _write_chunks(
        log_ref,
        [
            ("stdout", '{"a": 1}\n{"b"'),
            ("stderr", "warn"),
            ("stdout", ': 2}\n{"c": 3}\nlast'),
            ("stderr", "ing\n"),
            ("stdout", " line"),
        ],
    )
    lines = RunLogLines(log_ref, max_line_chars=1000)
    assert list(lines.read()) == [
        ("stdout", '{"a": 1}'),
        ("stdout", '{"b": 2}'),
        ("stdout", '{"c": 3}'),
        ("stderr", "warning"),
    ]
    assert list(lines.close()) == [("stdout", "last line")]


def test_a_log_line_still_being_written_is_read_once_it_is_complete(log_ref):
    _write_chunks(log_ref, [("stdout", "one\n")])
    _write_chunks(log_ref, [("stdout", "two\n")], newline_at_end=False)
    lines = RunLogLines(log_ref, max_line_chars=1000)
    assert list(lines.read()) == [("stdout", "one")]
    with run_log_path(log_ref).open("a") as log:
        log.write("\n")
    assert list(lines.read()) == [("stdout", "two")]


def test_a_line_longer_than_the_limit_is_dropped_and_counted(log_ref):
    _write_chunks(log_ref, [("stdout", "x" * 600), ("stdout", "x" * 600), ("stdout", "x\nshort\n")])
    lines = RunLogLines(log_ref, max_line_chars=1000)
    assert list(lines.read()) == [("stdout", "short")]
    assert lines.oversized == 1


def test_reading_in_small_steps_gives_the_same_transcript_as_reading_at_once(log_ref):
    text = "".join(json.dumps(event) + "\n" for event in _claude_run())
    _write_chunks(log_ref, [("stdout", text[i : i + 97]) for i in range(0, len(text), 97)])
    at_once = RunTranscript(log_ref, ClaudeStreamJsonParser()).finish()
    stepwise = RunTranscript(log_ref, ClaudeStreamJsonParser())
    for _ in range(200):
        stepwise.advance(max_bytes=300)
    assert stepwise.finish() == at_once
    assert at_once.session_id == SESSION and at_once.cost_cents == 4


def test_transcript_of_a_missing_log_says_nothing(log_ref):
    output = RunTranscript("company/agent/none.ndjson", CodexJsonParser()).finish()
    assert (output.session_id, output.usage, output.lines) == (None, None, 0)


@pytest.mark.django_db
def test_a_log_that_cannot_be_read_still_lets_the_run_finish_from_its_report(log_ref):
    agent = make_agent(adapter_type="claude_local", adapter_config={})
    run = make_run(agent, status="running", log_ref="company/agent")  # a directory, not a file

    status = run_finalize_from_report(run_id=run.id, report={"exitCode": 0, "log": {}})

    run.refresh_from_db()
    assert (status, run.usage_json, run.session_id_after) == ("succeeded", None, None)
