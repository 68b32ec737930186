"""Every secret value this process knows, and the one function that hides them in text.

Values are registered the moment the process reads or makes them: the OAuth client id and
secret when the config reads the environment (config.py), and everything that passes through
Secrets Manager (generated passwords, cookie secrets, values read back) by botocore hooks in
aws.py — before botocore can log a request body. ui.py applies `redact` to everything it
writes and `RedactingFilter` to the verbose log handler. Values are never printed by this
module; the registry holds them in memory only.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping

MASK = "****"
# Shorter values would mask ordinary words; no secret we handle is that short.
MIN_LENGTH = 6

# Fields that carry a secret in AWS request/response bodies, whatever the value: they cover
# a value read from AWS before the hook that registers it runs (botocore logs the response
# body first). JSON ("SecretString": "..."), query strings (MasterUserPassword=...) and
# Python reprs ('SecretString': '...').
_FIELDS = r"SecretString|SecretBinary|RandomPassword|MasterUserPassword|NewMasterUserPassword"
_FIELD_PATTERNS = (
    re.compile(rf'("(?:{_FIELDS})"\s*:\s*")((?:[^"\\]|\\.)*)(")'),
    re.compile(rf"('(?:{_FIELDS})'\s*:\s*')((?:[^'\\]|\\.)*)(')"),
    re.compile(rf"((?:{_FIELDS})=)([^&\s'\"]+)()"),
)

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The value as it is and as it appears escaped in JSON, URLs and reprs."""
    return {
        value,
        json.dumps(value)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        repr(value)[1:-1],
    }


def register(*values: str | None) -> None:
    """Remember secret values (empty and very short ones are ignored)."""
    global _pattern
    fresh = {f for v in values if v and len(v) >= MIN_LENGTH for f in _forms(v)}
    with _lock:
        if fresh <= _values:
            return
        _values.update(fresh)
        ordered = sorted(_values, key=len, reverse=True)  # longest first: no partial masks
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


# Variables whose values are secrets the tool reads from the environment.
SECRET_ENV = ("OAUTH2_PROXY_CLIENT_ID", "OAUTH2_PROXY_CLIENT_SECRET")


def register_environment(env: Mapping[str, str]) -> None:
    register(*(env.get(name) for name in SECRET_ENV))


def known() -> frozenset[str]:
    """The registered values (for tests)."""
    with _lock:
        return frozenset(_values)


def forget(values: Iterable[str] | None = None) -> None:
    """Drop registered values (all by default): for tests that start from a clean slate."""
    global _pattern
    with _lock:
        if values is None:
            _values.clear()
        else:
            _values.difference_update(f for v in values for f in _forms(v))
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


def redact(text: str) -> str:
    """The text with every known secret value, and every secret-carrying field, masked."""
    for field in _FIELD_PATTERNS:
        text = field.sub(lambda m: f"{m[1]}{MASK}{m[3]}", text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record (message, arguments, traceback) before any handler formats it.

    The record is changed in place, so handlers that see it later (further up the logger
    hierarchy) get the masked text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
