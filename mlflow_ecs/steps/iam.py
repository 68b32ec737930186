"""IAM: the execution role (pull images, read exactly our secrets) and the task role (S3 path)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

from .. import render
from ..aws import tag_dict, tag_list
from .base import (
    CREATING,
    DELETED,
    DELETING,
    READY,
    UNCHANGED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    gone_ok,
    missing_on,
    require_owned,
    tags_differ,
)

INLINE_POLICY = "mlflow-ecs"
MISSING = {"NoSuchEntity"}


@dataclass(frozen=True)
class RoleSpec:
    label: str
    name: str
    inline: dict[str, Any]
    managed: tuple[str, ...]


def specs(sc: StepContext) -> list[RoleSpec]:
    n = sc.names
    return [
        RoleSpec(
            "execution role",
            n.execution_role,
            render.execution_policy(list(sc.out.secret_arns.values())),
            (render.EXECUTION_POLICY_ARN,),
        ),
        RoleSpec("task role", n.task_role, render.task_policy(n.bucket, sc.cfg.artifacts.path), ()),
    ]


def _document(doc: Any) -> Any:
    """IAM returns policy documents URL-encoded (botocore usually decodes them already)."""
    return json.loads(unquote(doc)) if isinstance(doc, str) else doc


def find(sc: StepContext, name: str) -> dict[str, Any] | None:
    with aws_action(f"find the IAM role {name}"):
        got = missing_on(MISSING, lambda: sc.aws.iam.get_role(RoleName=name))
    if got is None:
        return None
    role = dict(got["Role"])
    require_owned("IAM role", name, tag_dict(role.get("Tags")), sc.names.stack)
    return role


def read_policies(sc: StepContext, name: str) -> tuple[Any, set[str]] | None:
    """(our inline policy document or None, attached managed policy ARNs); None: no role."""
    iam = sc.aws.iam
    with aws_action(f"read the policies of the IAM role {name}"):
        attached = missing_on(MISSING, lambda: iam.list_attached_role_policies(RoleName=name))
        if attached is None:
            return None
        got = missing_on(
            MISSING, lambda: iam.get_role_policy(RoleName=name, PolicyName=INLINE_POLICY)
        )
    inline = _document(got["PolicyDocument"]) if got else None
    return inline, {p["PolicyArn"] for p in attached["AttachedPolicies"]}


def ensure(sc: StepContext) -> None:
    for spec in specs(sc):
        arn = _ensure_role(sc, spec)
        if spec.name == sc.names.execution_role:
            sc.out.execution_role_arn = arn
        else:
            sc.out.task_role_arn = arn


def _ensure_role(sc: StepContext, spec: RoleSpec) -> str:
    iam = sc.aws.iam
    trust = render.ecs_tasks_trust_policy(sc.aws.account_id)
    role = sc.take(f"role:{spec.name}", lambda: find(sc, spec.name))
    changed: list[str] = []
    with aws_action(f"set up the IAM role {spec.name}"):
        if role is None:
            sc.report(spec.label, CREATING, spec.name)
            role = dict(
                iam.create_role(
                    RoleName=spec.name,
                    AssumeRolePolicyDocument=render.to_json(trust),
                    Description=f"mlflow-ecs {sc.names.stack}: {spec.label}",
                    Tags=tag_list(sc.tags),
                )["Role"]
            )
            changed.append("created")
            have_inline, attached = None, set()
        else:
            if _document(role.get("AssumeRolePolicyDocument")) != trust:
                iam.update_assume_role_policy(
                    RoleName=spec.name, PolicyDocument=render.to_json(trust)
                )
                changed.append("trust policy")
            to_set, to_remove = tags_differ(sc.tags, tag_dict(role.get("Tags")))
            if to_set:
                iam.tag_role(RoleName=spec.name, Tags=tag_list(to_set))
            if to_remove:
                iam.untag_role(RoleName=spec.name, TagKeys=to_remove)
            if to_set or to_remove:
                changed.append("tags")
            policies = sc.take(f"policies:{spec.name}", lambda: read_policies(sc, spec.name))
            have_inline, attached = policies or (None, set())
        if have_inline != spec.inline:
            iam.put_role_policy(
                RoleName=spec.name,
                PolicyName=INLINE_POLICY,
                PolicyDocument=render.to_json(spec.inline),
            )
            changed.append("policy")
        for arn in sorted(set(spec.managed) - attached):
            iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)
            changed.append("managed policy")
    if "created" in changed:
        sc.report(spec.label, READY, spec.name)
    elif changed:
        sc.report(spec.label, UPDATING, f"{spec.name}: {', '.join(changed)}")
    else:
        sc.report(spec.label, UNCHANGED, spec.name)
    return str(role["Arn"])


def describe(sc: StepContext) -> list[Resource]:
    rows = []
    for spec in specs(sc):
        role = sc.take(f"role:{spec.name}", partial(find, sc, spec.name))
        if role is None:
            rows.append(Resource(spec.label, spec.name))
        else:
            rows.append(Resource(spec.label, spec.name, role["Arn"], "present"))
    return rows


def delete(sc: StepContext) -> None:
    for spec in specs(sc):
        if sc.take(f"role:{spec.name}", partial(find, sc, spec.name)) is None:
            sc.report(spec.label, DELETED, "already gone")
            continue
        sc.report(spec.label, DELETING, spec.name)
        with aws_action(f"delete the IAM role {spec.name}"):
            _delete_role(sc, spec.name)
        sc.report(spec.label, DELETED, spec.name)


def _delete_role(sc: StepContext, name: str) -> None:
    """Inline policies, attachments, then the role; anything already gone is fine."""
    iam = sc.aws.iam
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        gone_ok(MISSING, partial(iam.delete_role_policy, RoleName=name, PolicyName=policy))
    for att in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        arn = att["PolicyArn"]
        gone_ok(MISSING, partial(iam.detach_role_policy, RoleName=name, PolicyArn=arn))
    gone_ok(MISSING, lambda: iam.delete_role(RoleName=name))
