"""The CloudWatch log group both containers write to, with its retention."""

from __future__ import annotations

from typing import Any

from ..changes import Change, Diff, change, tag_diffs, tags_of
from .base import (
    CREATED,
    CREATING,
    DELETED,
    DELETING,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    gone_ok,
    require_owned,
)

MISSING = {"ResourceNotFoundException"}


def _arn(group: dict[str, Any]) -> str:
    return str(group["arn"]).removesuffix(":*")


def find(sc: StepContext) -> tuple[dict[str, Any], dict[str, str]] | None:
    """(group, tags) or None."""
    name = sc.names.log_group
    with aws_action(f"find the log group {name}"):
        groups = sc.aws.logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
        group = next((dict(g) for g in groups if g["logGroupName"] == name), None)
        if group is None:
            return None
        tags = sc.aws.logs.list_tags_for_resource(resourceArn=_arn(group)).get("tags", {})
    require_owned("log group", name, tags, sc.names.stack)
    return group, tags


def compare(sc: StepContext, found: tuple[dict[str, Any], dict[str, str]] | None) -> Change:
    name, days = sc.names.log_group, sc.cfg.service.log_retention_days
    if found is None:
        return change("log group", name, [Diff("retention days", None, days)], created=True)
    group, tags = found
    diffs = []
    if group.get("retentionInDays") != days:
        diffs.append(Diff("retention days", group.get("retentionInDays"), days))
    return change("log group", name, diffs + tag_diffs(sc.tags, tags))


def plan(sc: StepContext) -> list[Change]:
    return [compare(sc, sc.peek("logs", lambda: find(sc)))]


def ensure(sc: StepContext) -> None:
    name, days = sc.names.log_group, sc.cfg.service.log_retention_days
    logs = sc.aws.logs
    found = sc.take("logs", lambda: find(sc))
    planned = compare(sc, found)
    with aws_action(f"set up the log group {name}"):
        if found is None:
            sc.report("log group", CREATING, f"{name}, {days} days")
            logs.create_log_group(logGroupName=name, tags=sc.tags)
            logs.put_retention_policy(logGroupName=name, retentionInDays=days)
            sc.report("log group", CREATED, name)
            return
        if not planned.changed:
            sc.report("log group", UNCHANGED, name)
            return
        sc.report("log group", UPDATING, f"{name}: {planned.summary()}")
        if planned.has("retention days"):
            logs.put_retention_policy(logGroupName=name, retentionInDays=days)
        to_set, to_remove = tags_of(planned)
        arn = _arn(found[0])
        if to_set:
            logs.tag_resource(resourceArn=arn, tags=to_set)
        if to_remove:
            logs.untag_resource(resourceArn=arn, tagKeys=to_remove)
    sc.report("log group", UPDATED, name)


def describe(sc: StepContext) -> list[Resource]:
    found = sc.take("logs", lambda: find(sc))
    if found is None:
        return [Resource("log group", sc.names.log_group)]
    group, _ = found
    days = group.get("retentionInDays")
    return [
        Resource("log group", sc.names.log_group, _arn(group), "present", f"retention {days} days")
    ]


def delete(sc: StepContext) -> None:
    name = sc.names.log_group
    if sc.take("logs", lambda: find(sc)) is None:
        sc.report("log group", DELETED, "already gone")
        return
    sc.report("log group", DELETING, name)
    with aws_action(f"delete the log group {name}"):
        gone_ok(MISSING, lambda: sc.aws.logs.delete_log_group(logGroupName=name))
    sc.report("log group", DELETED, name)
