"""Security groups: alb (80/443 from allowed_cidrs), tasks (the proxy port from alb only),
db (3306 from tasks only)."""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import render
from ..aws import tag_dict, tag_list
from ..changes import Change, Diff, change, is_pending, pending, tag_diffs
from .base import (
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
    in_parallel,
    require_owned,
    retry_on,
    sync_ec2_tags,
)

ROLES = ("alb", "tasks", "db")
DESCRIPTIONS = {
    "alb": "mlflow-ecs load balancer: HTTP(S) from allowed_cidrs",
    "tasks": "mlflow-ecs tasks: oauth2-proxy port from the load balancer only",
    "db": "mlflow-ecs database: MySQL from the tasks only",
}


def group_names(sc: StepContext) -> dict[str, str]:
    n = sc.names
    return {"alb": n.sg_alb, "tasks": n.sg_tasks, "db": n.sg_db}


def find(sc: StepContext) -> dict[str, dict[str, Any]]:
    """role -> group, for the groups of this stack's names in its VPC (one call)."""
    if not sc.out.vpc_id:
        return {}
    names = group_names(sc)
    with aws_action("find the security groups"):
        groups = sc.aws.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [sc.out.vpc_id]},
                {"Name": "group-name", "Values": list(names.values())},
            ]
        )["SecurityGroups"]
    by_name = {g["GroupName"]: dict(g) for g in groups}
    found = {role: by_name[name] for role, name in names.items() if name in by_name}
    for role, group in found.items():
        require_owned("security group", names[role], tag_dict(group.get("Tags")), sc.names.stack)
    return found


def desired_rules(sc: StepContext, role: str) -> set[render.Rule]:
    sgs = sc.out.security_groups
    if role == "alb":
        return render.alb_rules(sc.cfg)
    if role == "tasks":
        return render.task_rules(sc.cfg, sgs["alb"])
    return render.db_rules(sgs["tasks"])


def rule_text(rule: render.Rule) -> str:
    proto, lo, hi, source = rule
    ports = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{proto} {ports} from {source}" if proto != "-1" else f"all traffic from {source}"


def _ec2_tags(sc: StepContext, role: str) -> dict[str, str]:
    return {**sc.tags, "Name": group_names(sc)[role]}


def rule_changes(
    sc: StepContext, role: str, group: dict[str, Any] | None
) -> tuple[set[render.Rule], set[render.Rule]]:
    """(rules to revoke, rules to authorize)."""
    have = render.rules_of(group.get("IpPermissions", [])) if group else set()
    want = desired_rules(sc, role)
    return have - want, want - have


def compare(sc: StepContext, role: str, group: dict[str, Any] | None) -> Change:
    extra, missing = rule_changes(sc, role, group)
    diffs = [Diff("ingress", rule_text(r), None) for r in sorted(extra)]
    diffs += [Diff("ingress", None, rule_text(r)) for r in sorted(missing)]
    name = group_names(sc)[role]
    if group is None:
        return change("security group", name, diffs, created=True, note=DESCRIPTIONS[role])
    tags = tag_diffs(_ec2_tags(sc, role), tag_dict(group.get("Tags")))
    return change("security group", name, diffs + tags)


def plan(sc: StepContext) -> list[Change]:
    found = sc.peek("security", lambda: find(sc)) if not is_pending(sc.out.vpc_id) else {}
    for role in ROLES:
        group = found.get(role)
        sc.out.security_groups[role] = group["GroupId"] if group else pending(f"group {role}")
    return [compare(sc, role, found.get(role)) for role in ROLES]


def ensure(sc: StepContext) -> None:
    found = sc.take("security", lambda: find(sc))
    names = group_names(sc)

    def create(role: str) -> dict[str, Any]:
        sc.report(f"security group {role}", CREATING, names[role])
        with aws_action(f"create the security group {names[role]}"):
            gid = sc.aws.ec2.create_security_group(
                GroupName=names[role],
                Description=DESCRIPTIONS[role],
                VpcId=sc.out.vpc_id,
                TagSpecifications=[
                    {"ResourceType": "security-group", "Tags": tag_list(_ec2_tags(sc, role))}
                ],
            )["GroupId"]
        return {"GroupId": gid, "IpPermissions": [], "Tags": tag_list(_ec2_tags(sc, role))}

    missing = [role for role in ROLES if role not in found]
    found |= dict(
        zip(missing, in_parallel([partial(create, role) for role in missing]), strict=True)
    )
    for role in ROLES:
        sc.out.security_groups[role] = found[role]["GroupId"]
    # Each group's rules only name the other groups' ids, so they can be set at once.
    in_parallel([partial(_sync, sc, role, found[role]) for role in ROLES])


def _sync(sc: StepContext, role: str, group: dict[str, Any]) -> None:
    gid = group["GroupId"]
    planned = compare(sc, role, group)
    label = f"security group {role}"
    if not planned.changed:
        sc.report(label, UNCHANGED, gid)
        return
    extra, missing = rule_changes(sc, role, group)
    sc.report(label, UPDATING, f"{gid}: {planned.summary()}")
    ec2 = sc.aws.ec2
    with aws_action(f"update the rules of {group_names(sc)[role]}"):
        if extra:
            ec2.revoke_security_group_ingress(
                GroupId=gid,
                IpPermissions=render.ip_permissions(extra),  # type: ignore[arg-type]
            )
        if missing:
            ec2.authorize_security_group_ingress(
                GroupId=gid,
                IpPermissions=render.ip_permissions(missing),  # type: ignore[arg-type]
            )
        sync_ec2_tags(sc, gid, planned)
    sc.report(label, UPDATED, gid)


def describe(sc: StepContext) -> list[Resource]:
    found = sc.take("security", lambda: find(sc))
    names = group_names(sc)
    rows = []
    for role in ROLES:
        group = found.get(role)
        if group is None:
            rows.append(Resource("security group", names[role]))
            continue
        sc.out.security_groups[role] = group["GroupId"]
        rows.append(Resource("security group", names[role], group["GroupId"], "present"))
    return rows


def delete(sc: StepContext) -> None:
    found = sc.take("security", lambda: find(sc))
    for role in reversed(ROLES):  # db refers to tasks, tasks to alb
        group = found.get(role)
        label = f"security group {role}"
        if group is None:
            sc.report(label, DELETED, "already gone")
            continue
        gid = group["GroupId"]
        sc.report(label, DELETING, gid)
        with aws_action(f"delete the security group {gid}"):
            # Network interfaces of deleted load balancers, tasks and databases linger a while.
            retry_on(
                sc,
                {"DependencyViolation"},
                partial(
                    gone_ok,
                    {"InvalidGroup.NotFound"},
                    partial(sc.aws.ec2.delete_security_group, GroupId=gid),
                ),
                attempts=30,
            )
        sc.report(label, DELETED, gid)
