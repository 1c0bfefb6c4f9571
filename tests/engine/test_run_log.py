"""The NDJSON run log: truncation, redaction across chunk boundaries, size and digest."""

from __future__ import annotations

import hashlib
import json

import pytest

from heartbeat.run_log import REDACTED, RunLogWriter, SecretRedactor, chunk_truncate


def test_short_chunk_is_kept_whole():
    assert chunk_truncate("hello", 10) == "hello"


def test_long_chunk_keeps_first_sixty_and_last_twenty_five_percent():
    text = "a" * 600 + "b" * 250 + "c" * 150
    capped = chunk_truncate(text, 100)
    assert capped.startswith("a" * 60 + "\n[... 915 characters truncated ...]\n")
    assert capped.endswith("c" * 25)


def test_secret_split_across_chunks_is_redacted():
    redactor = SecretRedactor(["s3cret-value"])
    out = redactor.feed("key=s3cr") + redactor.feed("et-value and more") + redactor.flush()
    assert out == f"key={REDACTED} and more"


def test_short_values_are_not_treated_as_secrets():
    redactor = SecretRedactor(["1"])
    assert redactor.feed("a1b") + redactor.flush() == "a1b"


def test_writer_records_lines_size_digest_and_excerpts(tmp_path):
    path = tmp_path / "c" / "a" / "r.ndjson"
    writer = RunLogWriter(
        path=path, secrets=["token-123456"], chunk_max_chars=1000, excerpt_max_chars=8
    )
    writer.write("stdout", "héllo token-123456\n".encode())
    writer.write("stderr", b"oops\n")
    summary = writer.close()

    raw = path.read_bytes()
    lines = [json.loads(line) for line in raw.splitlines()]
    text = "".join(line["chunk"] for line in lines if line["stream"] == "stdout")
    assert text == f"héllo {REDACTED}\n"
    assert summary.log_bytes == len(raw)
    assert summary.log_sha256 == hashlib.sha256(raw).hexdigest()
    assert summary.stdout_excerpt == "ACTED***\n"[-8:]
    assert summary.stderr_excerpt == "oops\n"


def test_multibyte_character_split_between_reads_is_decoded_whole(tmp_path):
    writer = RunLogWriter(
        path=tmp_path / "r.ndjson", secrets=[], chunk_max_chars=100, excerpt_max_chars=100
    )
    encoded = "é".encode()
    writer.write("stdout", encoded[:1])
    writer.write("stdout", encoded[1:])
    assert writer.close().stdout_excerpt == "é"


def _stream(redactor: SecretRedactor, *chunks: str) -> str:
    return "".join(redactor.feed(chunk) for chunk in chunks) + redactor.flush()


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-Abcdefghijklmnopqrstuvwxyz0123",
        "sk-ant-api03-Abcdefghijklmnopqrstuvwxyz",
        "ghp_" + "A1b2C3d4E5" * 4,
        "pcak_" + "x" * 43,
        "pcr_.eJxVjMsKgjAURf_lrj9hJb3Uy6Ki:1Ct5xJ:AbCdEfGhIjKlMnOp",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "xoxb-1234567890-abcdefghij",
    ],
)
def test_credential_shaped_text_is_redacted_without_being_configured(secret):
    redactor = SecretRedactor([])
    assert _stream(redactor, f"export KEY={secret}\n") == f"export KEY={REDACTED}\n"


def test_credential_shape_inside_a_longer_word_is_kept():
    text = "see task-abcdefghijklmnopqrstuvwxyz0 and debearer abcdefghijklmnopqrstu\n"
    assert _stream(SecretRedactor([]), text) == text


def test_credential_pattern_split_across_chunks_is_redacted_whole():
    redactor = SecretRedactor([])
    out = _stream(redactor, "using sk-ant-api03-Abcdefgh", "ijklmnopqrstuvwxyz and more\n")
    assert out == f"using {REDACTED} and more\n"


def test_bearer_token_is_redacted_and_the_word_kept():
    redactor = SecretRedactor([])
    out = _stream(redactor, "Authorization: Bearer ", "opaque.token-value_1234567\n")
    assert out == f"Authorization: Bearer {REDACTED}\n"


def test_private_key_block_across_chunks_is_redacted_and_what_follows_is_kept():
    body = "MIIEowIBAAKCAQEA7\n" * 20
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\n"
    redactor = SecretRedactor([])
    out = _stream(redactor, "before\n" + key[:100], key[100:300], key[300:] + "after\n")
    assert out == f"before\n{REDACTED}\nafter\n"


def test_private_key_block_without_end_stops_being_redacted_after_its_bound():
    redactor = SecretRedactor([])
    out = _stream(redactor, "-----BEGIN PRIVATE KEY-----\n", "k" * 40_000 + "\n", "later\n")
    assert out.startswith(REDACTED)
    assert out.endswith("later\n")
    assert len(out) < 40_000


def test_configured_secret_with_a_line_break_split_across_chunks_is_redacted():
    secret = "line-one-of-a-key\nline-two-of-a-key"
    redactor = SecretRedactor([secret])
    out = _stream(redactor, "value: line-one-of-a-key\n", "line-two-of-a-key done\n")
    assert out == f"value: {REDACTED} done\n"


def test_a_long_line_without_a_break_is_released_before_the_end():
    redactor = SecretRedactor(["s3cret-value"])
    released = redactor.feed("word " * 20_000)
    assert len(released) > 50_000
    assert released.endswith(" ")


def test_writer_redacts_credential_patterns_in_the_log_and_excerpt(tmp_path):
    path = tmp_path / "r.ndjson"
    writer = RunLogWriter(path=path, secrets=[], chunk_max_chars=1000, excerpt_max_chars=100)
    writer.write("stdout", b"key sk-Abcdefghijklmnopqrstuvwxyz\n")
    summary = writer.close()
    assert "sk-Abc" not in path.read_text()
    assert summary.stdout_excerpt == f"key {REDACTED}\n"
