"""The CloudWatch log group both containers write to, with its retention."""

from __future__ import annotations

from typing import Any

from .base import (
    CREATING,
    DELETED,
    DELETING,
    UNCHANGED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    gone_ok,
    require_owned,
    tags_differ,
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


def ensure(sc: StepContext) -> None:
    name, days = sc.names.log_group, sc.cfg.service.log_retention_days
    logs = sc.aws.logs
    found = sc.take("logs", lambda: find(sc))
    with aws_action(f"set up the log group {name}"):
        if found is None:
            sc.report("log group", CREATING, f"{name}, {days} days")
            logs.create_log_group(logGroupName=name, tags=sc.tags)
            logs.put_retention_policy(logGroupName=name, retentionInDays=days)
            return
        group, tags = found
        changes = []
        if group.get("retentionInDays") != days:
            logs.put_retention_policy(logGroupName=name, retentionInDays=days)
            changes.append(f"retention {group.get('retentionInDays')} -> {days} days")
        to_set, to_remove = tags_differ(sc.tags, tags)
        if to_set:
            logs.tag_resource(resourceArn=_arn(group), tags=to_set)
        if to_remove:
            logs.untag_resource(resourceArn=_arn(group), tagKeys=to_remove)
        if to_set or to_remove:
            changes.append("tags")
    if changes:
        sc.report("log group", UPDATING, f"{name}: {', '.join(changes)}")
    else:
        sc.report("log group", UNCHANGED, name)


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
