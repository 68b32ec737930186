"""The Fargate task definition: a new revision only when the rendered one differs."""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from .. import render
from ..aws import ecs_tags, tag_dict
from ..changes import CREATE, Change, Diff, change, is_pending, pending, tag_diffs
from .base import (
    CREATING,
    DELETED,
    DELETING,
    READY,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    sync_ecs_tags,
)


def refs(sc: StepContext) -> render.TaskRefs:
    o = sc.out
    return render.TaskRefs(
        region=sc.aws.region,
        execution_role_arn=o.execution_role_arn,
        task_role_arn=o.task_role_arn,
        db_host=o.db_endpoint,
        alb_dns=o.alb_dns,
        secret_arns=dict(o.secret_arns),
    )


def desired(sc: StepContext) -> dict[str, Any]:
    return render.task_definition(sc.cfg, sc.names, refs(sc))


def find(sc: StepContext, which: str = "") -> dict[str, Any] | None:
    """The latest ACTIVE revision of the family (or the given one), with its tags."""
    target = which or sc.names.task_family
    try:
        got = sc.aws.ecs.describe_task_definition(taskDefinition=target, include=["TAGS"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {
            "ClientException",
            "InvalidParameterException",
        }:
            return None
        raise
    td = dict(got["taskDefinition"])
    if not which and td.get("status") == "INACTIVE":
        return None  # a bare family means its latest ACTIVE revision (some emulators disagree)
    td["tags"] = got.get("tags", [])
    return td


def _sorted_named(items: list[Any]) -> list[Any]:
    return (
        sorted(items, key=lambda i: i.get("name", ""))
        if all(isinstance(i, dict) for i in items)
        else items
    )


def covers(have: Any, want: Any) -> bool:
    """Whether AWS's copy holds everything we render (AWS adds defaults of its own)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(covers(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return False
        return all(
            covers(h, w) for h, w in zip(_sorted_named(have), _sorted_named(want), strict=True)
        )
    return bool(have == want)


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[Diff]:
    """The top-level (and per-container: 'mlflow.image') fields that differ, old -> new."""
    diffs = [
        Diff(k, have.get(k), v)
        for k, v in want.items()
        if k != "containerDefinitions" and not covers(have.get(k), v)
    ]
    have_c = {c["name"]: c for c in have.get("containerDefinitions", [])}
    for container in want["containerDefinitions"]:
        name = container["name"]
        got = have_c.get(name)
        if got is None:
            diffs.append(Diff(f"{name} container", None, container.get("image")))
            continue
        for k, v in container.items():
            if covers(got.get(k), v):
                continue
            if k in _BY_NAME:  # one diff per variable or secret, not the whole list
                diffs += _named_diffs(f"{name}.{k}", got.get(k) or [], v, _BY_NAME[k])
            else:
                diffs.append(Diff(f"{name}.{k}", _shown(got.get(k)), _shown(v)))
    for name in sorted(set(have_c) - {c["name"] for c in want["containerDefinitions"]}):
        diffs.append(Diff(f"{name} container", have_c[name].get("image"), None))
    return diffs


_BY_NAME = {"environment": "value", "secrets": "valueFrom"}


# A plain environment variable named so may hold a secret (someone else's revision): hidden.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def _named_diffs(prefix: str, have: list[Any], want: list[Any], field: str) -> list[Diff]:
    old = {i["name"]: i.get(field) for i in have}
    new = {i["name"]: i.get(field) for i in want}
    hide = field == "value"
    return [
        Diff(f"{prefix} {key}", old.get(key), new.get(key), hide and bool(SECRET_NAME.search(key)))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _shown(value: Any) -> Any:
    """A one-string command (sh -c SCRIPT) as its script: what a reader compares."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return value


def compare(
    sc: StepContext, latest: dict[str, Any] | None, current: dict[str, Any] | None = None
) -> tuple[Change, str]:
    """(the change, the ARN the service should run: a registered one or a placeholder).

    The service's revision, then the latest, is kept when it already holds what we render.
    """
    want, family = desired(sc), sc.names.task_family
    for td in (current, latest):
        if td is not None and not differences(td, want):  # kept; its tags are set in place
            arn = str(td["taskDefinitionArn"])
            return change("task definition", family, _tag_diffs(sc, td), note=_short(arn)), arn
    base = current or latest
    arn = pending(f"revision of {family}")
    if base is None:
        return change("task definition", family, [], created=True), arn
    note = f"a new revision (from {_short(base['taskDefinitionArn'])})"
    diffs = differences(base, want) + _tag_diffs(sc, base)
    return change("task definition", family, diffs, note=note), arn


def _tag_diffs(sc: StepContext, td: dict[str, Any]) -> list[Diff]:
    return tag_diffs(sc.tags, tag_dict(td.get("tags"), "key", "value"))


def plan(sc: StepContext, current_arn: str = "") -> list[Change]:
    latest = sc.peek("taskdef", lambda: find(sc))
    current = None
    if current_arn and (not latest or latest["taskDefinitionArn"] != current_arn):
        current = sc.peek("taskdef_current", lambda: find(sc, current_arn))
    planned, sc.out.task_definition_arn = compare(sc, latest, current)
    return [planned]


def ensure(sc: StepContext, current_arn: str = "") -> None:
    """Register a revision unless the service's (or the latest) already matches."""
    family = sc.names.task_family
    with aws_action(f"read the task definition {family}"):
        latest = sc.take("taskdef", lambda: find(sc))
        current = None
        if current_arn and (not latest or latest["taskDefinitionArn"] != current_arn):
            current = sc.take("taskdef_current", lambda: find(sc, current_arn))
    planned, arn = compare(sc, latest, current)
    if not is_pending(arn):  # a registered revision already holds what we render
        sc.out.task_definition_arn = arn
        if planned.changed:
            sc.report("task definition", UPDATING, f"{_short(arn)}: {planned.summary()}")
            with aws_action(f"tag the task definition {_short(arn)}"):
                sync_ecs_tags(sc, arn, planned)
        sc.report("task definition", UPDATED if planned.changed else UNCHANGED, _short(arn))
        return
    state = CREATING if planned.action == CREATE else UPDATING
    sc.report("task definition", state, planned.summary() or family)
    with aws_action(f"register the task definition {family}"):
        made = sc.aws.ecs.register_task_definition(**desired(sc), tags=ecs_tags(sc.tags))
    sc.out.task_definition_arn = made["taskDefinition"]["taskDefinitionArn"]
    sc.report("task definition", READY, _short(sc.out.task_definition_arn))


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def describe(sc: StepContext, current_arn: str = "") -> list[Resource]:
    """The service's revision (or the latest): from the reads made ahead, if they were."""
    latest = sc.found.get("taskdef")
    if not current_arn:
        td = sc.take("taskdef", lambda: find(sc))
    elif latest and latest["taskDefinitionArn"] == current_arn:
        td = latest
    else:
        td = sc.take("taskdef_current", lambda: find(sc, current_arn))
    if td is None:
        return [Resource("task definition", sc.names.task_family)]
    images = ", ".join(c["image"] for c in td.get("containerDefinitions", []))
    return [
        Resource(
            "task definition",
            sc.names.task_family,
            _short(td["taskDefinitionArn"]),
            td["status"].lower(),
            images,
        )
    ]


def delete(sc: StepContext) -> None:
    ecs, family = sc.aws.ecs, sc.names.task_family
    with aws_action(f"list the revisions of {family}"):
        arns = [
            arn
            for page in ecs.get_paginator("list_task_definitions").paginate(
                familyPrefix=family, status="ACTIVE"
            )
            for arn in page["taskDefinitionArns"]
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family
        ]
    if not arns:
        sc.report("task definition", DELETED, "already gone")
        return
    sc.report("task definition", DELETING, f"{len(arns)} revisions of {family}")
    with aws_action(f"deregister the task definition {family}"):
        for arn in arns:
            ecs.deregister_task_definition(taskDefinition=arn)
    sc.report("task definition", DELETED, family)
