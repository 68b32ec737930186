"""Security groups: alb (80/443 from allowed_cidrs), tasks (the proxy port from alb only),
db (3306 from tasks only)."""

from __future__ import annotations

from functools import partial
from typing import Any

from .. import render
from ..aws import tag_dict, tag_list
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
    in_parallel,
    require_owned,
    retry_on,
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
                    {
                        "ResourceType": "security-group",
                        "Tags": tag_list({**sc.tags, "Name": names[role]}),
                    }
                ],
            )["GroupId"]
        return {"GroupId": gid, "IpPermissions": []}

    missing = [role for role in ROLES if role not in found]
    found |= dict(
        zip(missing, in_parallel([partial(create, role) for role in missing]), strict=True)
    )
    for role in ROLES:
        sc.out.security_groups[role] = found[role]["GroupId"]
    # Each group's rules only name the other groups' ids, so they can be set at once.
    in_parallel([partial(_sync_rules, sc, role, found[role]) for role in ROLES])


def _sync_rules(sc: StepContext, role: str, group: dict[str, Any]) -> None:
    gid = group["GroupId"]
    have = render.rules_of(group.get("IpPermissions", []))
    want = desired_rules(sc, role)
    extra, missing = have - want, want - have
    label = f"security group {role}"
    if not extra and not missing:
        sc.report(label, UNCHANGED, gid)
        return
    sc.report(label, UPDATING, f"{gid}: +{len(missing)} -{len(extra)} rules")
    with aws_action(f"update the rules of {group_names(sc)[role]}"):
        if extra:
            sc.aws.ec2.revoke_security_group_ingress(
                GroupId=gid,
                IpPermissions=render.ip_permissions(extra),  # type: ignore[arg-type]
            )
        if missing:
            sc.aws.ec2.authorize_security_group_ingress(
                GroupId=gid,
                IpPermissions=render.ip_permissions(missing),  # type: ignore[arg-type]
            )


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
        drift = render.rules_of(group.get("IpPermissions", [])) != (
            desired_rules(sc, role) if _can_render(sc, role) else None
        )
        detail = "rules differ from the config" if drift else ""
        rows.append(Resource("security group", names[role], group["GroupId"], "present", detail))
    return rows


def _can_render(sc: StepContext, role: str) -> bool:
    need = {"alb": None, "tasks": "alb", "db": "tasks"}[role]
    return need is None or need in sc.out.security_groups


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
