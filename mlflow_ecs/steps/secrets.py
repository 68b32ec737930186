"""Secrets Manager: DB password, OAuth client id/secret, cookie secret.

Values never leave this module except into AWS (and the DB password into create_db_cluster).
`down` schedules them for deletion with a recovery window; the next `up` restores them.
"""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Callable
from functools import partial
from typing import Any

from ..aws import tag_dict, tag_list
from ..changes import Change, Diff, change, pending, tag_diffs, tags_of
from ..errors import ConfigError
from .base import (
    CREATED,
    CREATING,
    DELETED,
    DELETING,
    KEPT,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    missing_on,
    require_owned,
)

RECOVERY_WINDOW_DAYS = 30
# Characters RDS forbids (/ " @) plus everything shell- or URL-hostile: keep letters and digits.
DB_PASSWORD_LENGTH = 40

Prompt = Callable[[str], str]


def secret_names(sc: StepContext) -> list[str]:
    n = sc.names
    return [n.secret_db_password, n.secret_client_id, n.secret_client_secret, n.secret_cookie]


def find(sc: StepContext) -> dict[str, dict[str, Any]]:
    """name -> secret metadata (including ones scheduled for deletion), in one call."""
    wanted = set(secret_names(sc))
    found: dict[str, dict[str, Any]] = {}
    with aws_action("list the stack's secrets"):
        pages = sc.aws.secrets.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [f"{sc.names.stack}/"]}],
            IncludePlannedDeletion=True,
        )
        for page in pages:
            for entry in page.get("SecretList", []):
                if entry.get("Name") in wanted:
                    found[entry["Name"]] = dict(entry)
    for name, meta in found.items():
        require_owned("secret", name, tag_dict(meta.get("Tags")), sc.names.stack)
    return found


def generate_cookie_secret() -> str:
    """32 random bytes, URL-safe base64: what oauth2-proxy's cookie secret must decode to."""
    return base64.urlsafe_b64encode(pysecrets.token_bytes(32)).decode()


def preflight(sc: StepContext, prompt: Prompt | None = None) -> dict[str, str]:
    """Before any change: the OAuth client id/secret must be given or already stored.

    Returns the values to store (name -> value), from the config/environment or the prompt.
    """
    found = sc.take("secrets", lambda: find(sc))
    sc.found["secrets"] = found  # ensure() comes next and reuses this read
    given = {sc.names.secret_client_id: "", sc.names.secret_client_secret: ""}
    given |= given_values(sc)  # the missing ones kept, empty, to ask for them
    labels = {
        sc.names.secret_client_id: (
            "oauth2_proxy -> client_id",
            "set it in the config or export OAUTH2_PROXY_CLIENT_ID",
        ),
        sc.names.secret_client_secret: (
            "OAUTH2_PROXY_CLIENT_SECRET",
            "export it (it is never read from the config file)",
        ),
    }
    problems = []
    for name, value in given.items():
        if value or name in found:
            continue
        if prompt is not None:
            given[name] = prompt(labels[name][0])
        if not given[name]:
            key, fix = labels[name]
            problems.append(f"{key}: missing: this stack has no OAuth client stored yet: {fix}")
    if problems:
        raise ConfigError(problems, sc.cfg.source)
    return {k: v for k, v in given.items() if v}


def given_values(sc: StepContext) -> dict[str, str]:
    """The OAuth values the config or environment gives (name -> value; empty ones left out)."""
    given = {
        sc.names.secret_client_id: sc.cfg.secrets.client_id,
        sc.names.secret_client_secret: sc.cfg.secrets.client_secret,
    }
    return {k: v for k, v in given.items() if v}


def compare(
    sc: StepContext, name: str, meta: dict[str, Any] | None, value: str | None, stored: str | None
) -> Change:
    """``value``: the one given (None: keep what is stored); ``stored``: what is stored."""
    label = "secret"
    if meta is None:
        generated = name in {sc.names.secret_db_password, sc.names.secret_cookie}
        note = "generated" if generated else ""
        if not generated and value is None:
            note = "no value given: up asks for it (or export it first)"
        return change(label, name, [Diff("value", None, "new", sensitive=True)], True, note)
    diffs = []
    if meta.get("DeletedDate"):
        diffs.append(Diff("scheduled for deletion", str(meta["DeletedDate"]), None))
    if value is not None and stored != value:
        diffs.append(Diff("value", "stored", "given", sensitive=True))
    note = "the service is redeployed to read it" if any(d.sensitive for d in diffs) else ""
    if meta.get("DeletedDate"):  # its value cannot be read until it is restored
        note = "restored" + (", and the given value stored again" if value is not None else "")
    return change(label, name, diffs + tag_diffs(sc.tags, tag_dict(meta.get("Tags"))), note=note)


Get = Callable[[str, Callable[[], Any]], Any]  # StepContext.peek (plan) or .take (up)


def _compared(
    sc: StepContext, values: dict[str, str], get: Get
) -> list[tuple[str, dict[str, Any] | None, Change]]:
    """(name, metadata, change) of each secret; a stored value is read only to compare it
    with a given one."""
    found = get("secrets", lambda: find(sc))
    rows = []
    for name in secret_names(sc):
        meta = found.get(name)
        stored = None
        if meta is not None and name in values:
            stored = get(f"value:{name}", partial(read_value, sc, name))
        rows.append((name, meta, compare(sc, name, meta, values.get(name), stored)))
    return rows


def plan(sc: StepContext, values: dict[str, str] | None = None) -> list[Change]:
    values = given_values(sc) if values is None else values
    rows = _compared(sc, values, sc.peek)
    for name, meta, c in rows:
        sc.out.secret_arns[name] = meta["ARN"] if meta else pending(f"secret {name}")
        sc.out.secrets_changed |= c.has("value") and meta is not None
    return [c for _, _, c in rows]


def ensure(sc: StepContext, values: dict[str, str]) -> None:
    for name, meta, planned in _compared(sc, values, sc.take):
        sc.out.secret_arns[name] = _ensure_secret(sc, name, meta, values, planned)


def _ensure_secret(
    sc: StepContext, name: str, meta: dict[str, Any] | None, values: dict[str, str], c: Change
) -> str:
    client, label = sc.aws.secrets, f"secret {name.split('/', 1)[1]}"
    if meta is None:
        value = values.get(name) or _generate(sc, name)
        sc.report(label, CREATING, name)
        with aws_action(f"create the secret {name}"):
            made = client.create_secret(Name=name, SecretString=value, Tags=tag_list(sc.tags))
        if name == sc.names.secret_db_password:
            sc.out.db_password = value
        sc.report(label, CREATED, name)
        return made["ARN"]
    if not c.changed:
        sc.report(label, UNCHANGED, name)
        return str(meta["ARN"])
    sc.report(label, UPDATING, f"{name}: {c.summary()}")
    with aws_action(f"update the secret {name}"):
        if c.has("scheduled for deletion"):
            client.restore_secret(SecretId=name)
        if c.has("value"):
            client.put_secret_value(SecretId=name, SecretString=values[name])
            sc.out.secrets_changed = True
        to_set, to_remove = tags_of(c)
        if to_set:
            client.tag_resource(SecretId=name, Tags=tag_list(to_set))
        if to_remove:
            client.untag_resource(SecretId=name, TagKeys=to_remove)
    sc.report(label, UPDATED, name)
    return str(meta["ARN"])


def _generate(sc: StepContext, name: str) -> str:
    if name == sc.names.secret_cookie:
        return generate_cookie_secret()
    if name == sc.names.secret_db_password:
        with aws_action("generate the database password"):
            return sc.aws.secrets.get_random_password(
                PasswordLength=DB_PASSWORD_LENGTH, ExcludePunctuation=True, IncludeSpace=False
            )["RandomPassword"]
    raise AssertionError(f"no generator for {name}")  # preflight guarantees the OAuth values


def read_value(sc: StepContext, name: str) -> str | None:
    """A stored value (to compare with a given one; never reported). None: no such secret."""
    with aws_action(f"read the secret {name}"):
        got = missing_on(
            {"ResourceNotFoundException", "InvalidRequestException"},
            lambda: sc.aws.secrets.get_secret_value(SecretId=name),
        )
    return got.get("SecretString") if got else None


def db_password(sc: StepContext) -> str:
    """The stored DB password (for creating the cluster). Never reported."""
    if sc.out.db_password:
        return sc.out.db_password
    with aws_action("read the database password secret"):
        value = sc.aws.secrets.get_secret_value(SecretId=sc.names.secret_db_password)
    sc.out.db_password = value["SecretString"]
    return sc.out.db_password


def describe(sc: StepContext) -> list[Resource]:
    found = sc.take("secrets", lambda: find(sc))
    rows = []
    for name in secret_names(sc):
        meta = found.get(name)
        if meta is None:
            rows.append(Resource("secret", name))
            continue
        sc.out.secret_arns[name] = meta["ARN"]
        deleted = meta.get("DeletedDate")
        state = "scheduled for deletion" if deleted else "present"
        rows.append(Resource("secret", name, meta["ARN"], state))
    return rows


def delete(sc: StepContext) -> None:
    found = sc.take("secrets", lambda: find(sc))
    client = sc.aws.secrets
    for name in secret_names(sc):
        label = f"secret {name.split('/', 1)[1]}"
        meta = found.get(name)
        if meta is None or (meta.get("DeletedDate") and not sc.delete_data):
            sc.report(
                label,
                DELETED if meta is None else KEPT,
                "already gone" if meta is None else "scheduled for deletion",
            )
            continue
        sc.report(label, DELETING, name)
        with aws_action(f"delete the secret {name}"):
            try:
                if sc.delete_data:
                    client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
                else:
                    client.delete_secret(SecretId=name, RecoveryWindowInDays=RECOVERY_WINDOW_DAYS)
            except client.exceptions.ResourceNotFoundException:
                pass
            except client.exceptions.InvalidRequestException as exc:
                # Already scheduled: to force-delete it, it must be restored first.
                if not sc.delete_data or "scheduled for deletion" not in str(exc):
                    raise
                client.restore_secret(SecretId=name)
                client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        if sc.delete_data:
            sc.report(label, DELETED, name)
        else:
            sc.report(label, KEPT, f"recoverable for {RECOVERY_WINDOW_DAYS} days; `up` restores it")
