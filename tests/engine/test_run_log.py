"""The NDJSON run log: truncation, redaction across chunk boundaries, size and digest."""

from __future__ import annotations

import hashlib
import json

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
