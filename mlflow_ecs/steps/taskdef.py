"""The Fargate task definition: a new revision only when the rendered one differs."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .. import render
from ..aws import tag_dict
from .base import (
    CREATING,
    DELETED,
    DELETING,
    UNCHANGED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
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


def differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Names of the top-level (and per-container) fields that differ."""
    diffs = [
        k for k, v in want.items() if k != "containerDefinitions" and not covers(have.get(k), v)
    ]
    have_c = {c["name"]: c for c in have.get("containerDefinitions", [])}
    for container in want["containerDefinitions"]:
        got = have_c.get(container["name"])
        if got is None:
            diffs.append(f"{container['name']} container")
            continue
        diffs += [
            f"{container['name']}.{k}" for k, v in container.items() if not covers(got.get(k), v)
        ]
    if set(have_c) - {c["name"] for c in want["containerDefinitions"]}:
        diffs.append("extra containers")
    return diffs


def ensure(sc: StepContext, current_arn: str = "") -> None:
    """Register a revision unless the latest (or the service's) already matches."""
    want = desired(sc)
    family = sc.names.task_family
    with aws_action(f"read the task definition {family}"):
        latest = sc.take("taskdef", lambda: find(sc))
        candidates = [latest] if latest else []
        other = current_arn and (not latest or latest["taskDefinitionArn"] != current_arn)
        if other and (current := sc.take("taskdef_current", lambda: find(sc, current_arn))):
            candidates.insert(0, current)
    for td in candidates:
        if not differences(td, want) and not _tags_stale(sc, td):
            sc.out.task_definition_arn = td["taskDefinitionArn"]
            sc.report("task definition", UNCHANGED, _short(td["taskDefinitionArn"]))
            return
    diffs = differences(latest, want) if latest else []
    sc.report("task definition", UPDATING if latest else CREATING, ", ".join(diffs[:6]) or family)
    tags = [{"key": k, "value": v} for k, v in sorted(sc.tags.items())]
    with aws_action(f"register the task definition {family}"):
        made = sc.aws.ecs.register_task_definition(**want, tags=tags)  # type: ignore[arg-type]
    sc.out.task_definition_arn = made["taskDefinition"]["taskDefinitionArn"]


def _tags_stale(sc: StepContext, td: dict[str, Any]) -> bool:
    have = tag_dict(td.get("tags"), "key", "value")
    return any(have.get(k) != v for k, v in sc.tags.items())


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def describe(sc: StepContext, current_arn: str = "") -> list[Resource]:
    td = find(sc, current_arn) if current_arn else find(sc)
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
