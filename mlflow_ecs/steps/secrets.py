"""Secrets Manager: DB password, OAuth client id/secret, cookie secret.

Values never leave this module except into AWS (and the DB password into create_db_cluster).
`down` schedules them for deletion with a recovery window; the next `up` restores them.
"""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Callable
from typing import Any

from ..aws import tag_dict, tag_list
from ..errors import ConfigError
from .base import (
    CREATING,
    DELETED,
    DELETING,
    KEPT,
    UNCHANGED,
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
    given = {
        sc.names.secret_client_id: sc.cfg.secrets.client_id,
        sc.names.secret_client_secret: sc.cfg.secrets.client_secret,
    }
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


def ensure(sc: StepContext, values: dict[str, str]) -> None:
    found = sc.take("secrets", lambda: find(sc))
    client = sc.aws.secrets
    for name in secret_names(sc):
        label = f"secret {name.split('/', 1)[1]}"
        meta = found.get(name)
        if meta is not None and meta.get("DeletedDate"):
            sc.report(label, UPDATING, "restoring (was scheduled for deletion)")
            with aws_action(f"restore the secret {name}"):
                client.restore_secret(SecretId=name)
        if meta is None:
            value = values.get(name) or _generate(sc, name)
            sc.report(label, CREATING, name)
            with aws_action(f"create the secret {name}"):
                meta = dict(
                    client.create_secret(Name=name, SecretString=value, Tags=tag_list(sc.tags))
                )
            meta["Name"] = name
            if name == sc.names.secret_db_password:
                sc.out.db_password = value
        elif name in values:
            _update_value(sc, name, values[name], label)
        else:
            sc.report(label, UNCHANGED, name)
        sc.out.secret_arns[name] = meta["ARN"]


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


def _update_value(sc: StepContext, name: str, value: str, label: str) -> None:
    current = sc.take(f"value:{name}", lambda: read_value(sc, name))
    if current == value:
        sc.report(label, UNCHANGED, name)
        return
    sc.report(label, UPDATING, f"{name}: new value (the service will be redeployed)")
    with aws_action(f"update the secret {name}"):
        sc.aws.secrets.put_secret_value(SecretId=name, SecretString=value)
    sc.out.secrets_changed = True


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
