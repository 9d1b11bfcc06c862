"""Signed records: an HMAC-SHA256 over a run's digests, with a key held outside the store.

A digest beside an artifact proves only that the two agree: anyone with write access to the
store can rewrite both. A signature made with a key the store does not hold (`REPROLAB_SIGNING_KEY`,
or a file named by `REPROLAB_SIGNING_KEY_FILE`) proves that the digests are the ones the key's
holder recorded; each digest then binds its artifact (checked where the artifact is read), and
the artifacts bind what the UI shows (checked against the logged values). MLflow has no
signing of its own. Plain values here; `reprolab.tracking` stores and checks the tags.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from reprolab.entrypoint import UserError

KEY_VARIABLE, KEY_FILE_VARIABLE = "REPROLAB_SIGNING_KEY", "REPROLAB_SIGNING_KEY_FILE"
SIGNATURE_TAG = "reprolab.signature"
SCHEME = "hmac-sha256-v1"
# The tags a signature covers: what made the result, and the digests of what it holds.
SIGNED_TAGS = (
    "reprolab.run_key",
    "reprolab.source.digest",
    "reprolab.dataset_digest",
    "reprolab.config_sha256",
    "reprolab.result_sha256",
    "reprolab.model_sha256",
)
UNSIGNED = (
    "unsigned record: its digests show that its files agree with its tags, not who wrote them; anyone with write "
    "access to the store could have rewritten both (set REPROLAB_SIGNING_KEY to sign and check records)"
)


class SignatureError(UserError, ValueError):
    """A record whose signature is missing or does not match, while a key is set."""


def signing_key() -> Optional[bytes]:
    """The key from REPROLAB_SIGNING_KEY, else from the file REPROLAB_SIGNING_KEY_FILE names; None without."""
    if os.environ.get(KEY_VARIABLE):
        return os.environ[KEY_VARIABLE].encode()
    path = os.environ.get(KEY_FILE_VARIABLE)
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise UserError(
            f"{KEY_FILE_VARIABLE}: cannot read {path} ({error.strerror}); fix the path or unset it"
        ) from None
    if not key:
        raise UserError(f"{KEY_FILE_VARIABLE}: {path} is empty; put the team's signing key in it")
    return key


def sign(tags: Mapping[str, str], key: bytes) -> str:
    """The signature of `tags` (those of SIGNED_TAGS that the run has)."""
    payload = json.dumps({name: tags.get(name, "") for name in SIGNED_TAGS}, sort_keys=True).encode()
    return f"{SCHEME}:{hmac.new(key, payload, hashlib.sha256).hexdigest()}"


def check(tags: Mapping[str, str], what: str) -> Optional[str]:
    """With a key set, refuse (SignatureError) a record of `what` that is unsigned or whose
    signature does not match its tags; return how far the record can be trusted, in words."""
    key = signing_key()
    if key is None:
        return UNSIGNED
    found = tags.get(SIGNATURE_TAG)
    if not found:
        raise SignatureError(
            f"{what} is not signed, and {KEY_VARIABLE} is set: it cannot be told from a forged record; it is not used"
        )
    if not hmac.compare_digest(found, sign(tags, key)):
        raise SignatureError(
            f"{what}'s signature does not match its record: the record was changed after it was signed, or signed "
            f"with another key; it is not used"
        )
    return "signed record: its signature matches its digests, and each file matches its digest"


def text_sha256(*texts: str) -> str:
    """SHA-256 over texts, each followed by a NUL: the digest of a run's config artifacts."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()
