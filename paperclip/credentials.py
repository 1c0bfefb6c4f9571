"""Credentials: run-scoped agent keys (injected as PAPERCLIP_API_KEY) and hashed stored tokens.

A run credential is a signed token carrying agent, company and run; it needs no table, and is only
honoured while its run is active (the authentication layer checks the run's status).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from django.core import signing

RUN_CREDENTIAL_PREFIX = "pcr_"
_RUN_CREDENTIAL_SALT = "paperclip.run-credential.v1"


@dataclass(frozen=True)
class RunCredential:
    run_id: str
    agent_id: str
    company_id: str


def run_credential_issue(*, run_id: str, agent_id: str, company_id: str) -> str:
    payload = {"r": str(run_id), "a": str(agent_id), "c": str(company_id)}
    return RUN_CREDENTIAL_PREFIX + signing.dumps(payload, salt=_RUN_CREDENTIAL_SALT, compress=True)


def run_credential_parse(token: str) -> RunCredential | None:
    """The credential's claims, or None when the token is not a valid run credential."""
    if not token.startswith(RUN_CREDENTIAL_PREFIX):
        return None
    try:
        payload = signing.loads(token[len(RUN_CREDENTIAL_PREFIX) :], salt=_RUN_CREDENTIAL_SALT)
        ids = [str(uuid.UUID(payload[claim])) for claim in ("r", "a", "c")]
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        # Claims that are not ids can only come from a key signed by something else.
        return None
    return RunCredential(run_id=ids[0], agent_id=ids[1], company_id=ids[2])


def secret_generate(prefix: str) -> tuple[str, str, str]:
    """A new secret for an API key or token: (secret shown once, display prefix, sha256 hash)."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, secret[: len(prefix) + 6], secret_hash(secret)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
