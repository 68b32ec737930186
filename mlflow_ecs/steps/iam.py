"""IAM: the execution role (pull images, read exactly our secrets) and the task role (S3 path)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

from .. import render
from ..aws import tag_dict, tag_list
from ..changes import CREATE, Change, Diff, change, tag_diffs, tags_of
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
    gone_ok,
    missing_on,
    require_owned,
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


def role_arn(sc: StepContext, name: str) -> str:
    """A role's ARN is known before it exists."""
    return f"arn:aws:iam::{sc.aws.account_id}:role/{name}"


def compare(
    sc: StepContext,
    spec: RoleSpec,
    role: dict[str, Any] | None,
    policies: tuple[Any, set[str]] | None,
) -> Change:
    inline = Diff(f"policy {INLINE_POLICY}", None, spec.inline)
    if role is None:
        managed = [Diff("managed policy", None, arn) for arn in spec.managed]
        return change(spec.label, spec.name, [inline, *managed], created=True)
    diffs = []
    trust = render.ecs_tasks_trust_policy(sc.aws.account_id)
    if _document(role.get("AssumeRolePolicyDocument")) != trust:
        diffs.append(Diff("trust policy", _document(role.get("AssumeRolePolicyDocument")), trust))
    have_inline, attached = policies or (None, set())
    note = ""
    if have_inline != spec.inline:
        diffs.append(Diff(inline.attribute, have_inline, spec.inline))
        old, new = render.artifact_location(have_inline), render.artifact_location(spec.inline)
        if old and old != new:
            note = (
                f"artifact access moves from {old} to {new}; what is under the old location "
                "stays there (never deleted), and runs logged before still point to it"
            )
    diffs += [Diff("managed policy", None, arn) for arn in sorted(set(spec.managed) - attached)]
    # Attached by hand (AdministratorAccess on the task role...): the role gets only ours.
    diffs += [Diff("managed policy", arn, None) for arn in sorted(attached - set(spec.managed))]
    tags = tag_diffs(sc.tags, tag_dict(role.get("Tags")))
    return change(spec.label, spec.name, diffs + tags, note=note)


def plan(sc: StepContext) -> list[Change]:
    changes = []
    for spec in specs(sc):
        role = sc.peek(f"role:{spec.name}", partial(find, sc, spec.name))
        policies = sc.peek(f"policies:{spec.name}", partial(read_policies, sc, spec.name))
        changes.append(compare(sc, spec, role, policies if role else None))
        _set_arn(sc, spec.name, role_arn(sc, spec.name))
    return changes


def _set_arn(sc: StepContext, name: str, arn: str) -> None:
    if name == sc.names.execution_role:
        sc.out.execution_role_arn = arn
    else:
        sc.out.task_role_arn = arn


def ensure(sc: StepContext) -> None:
    for spec in specs(sc):
        _set_arn(sc, spec.name, _ensure_role(sc, spec))


def _ensure_role(sc: StepContext, spec: RoleSpec) -> str:
    iam = sc.aws.iam
    role = sc.take(f"role:{spec.name}", lambda: find(sc, spec.name))
    policies = sc.take(f"policies:{spec.name}", lambda: read_policies(sc, spec.name))
    planned = compare(sc, spec, role, policies if role else None)
    if not planned.changed:
        sc.report(spec.label, UNCHANGED, spec.name)
        return str(role["Arn"]) if role else role_arn(sc, spec.name)
    with aws_action(f"set up the IAM role {spec.name}"):
        if role is None:
            sc.report(spec.label, CREATING, spec.name)
            trust = render.ecs_tasks_trust_policy(sc.aws.account_id)
            role = dict(
                iam.create_role(
                    RoleName=spec.name,
                    AssumeRolePolicyDocument=render.to_json(trust),
                    Description=f"mlflow-ecs {sc.names.stack}: {spec.label}",
                    Tags=tag_list(sc.tags),
                )["Role"]
            )
        else:
            sc.report(spec.label, UPDATING, f"{spec.name}: {planned.summary()}")
        for d in planned.diffs:
            _apply(sc, spec, d)
        to_set, to_remove = tags_of(planned)
        if to_set:
            iam.tag_role(RoleName=spec.name, Tags=tag_list(to_set))
        if to_remove:
            iam.untag_role(RoleName=spec.name, TagKeys=to_remove)
    sc.report(spec.label, READY if planned.action == CREATE else UPDATED, spec.name)
    return str(role["Arn"])


def _apply(sc: StepContext, spec: RoleSpec, d: Diff) -> None:
    iam, name = sc.aws.iam, spec.name
    if d.attribute == "trust policy":
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=render.to_json(d.new))
    elif d.attribute == f"policy {INLINE_POLICY}":
        iam.put_role_policy(
            RoleName=name, PolicyName=INLINE_POLICY, PolicyDocument=render.to_json(d.new)
        )
    elif d.attribute == "managed policy" and d.new:
        iam.attach_role_policy(RoleName=name, PolicyArn=d.new)
    elif d.attribute == "managed policy":
        gone_ok(MISSING, partial(iam.detach_role_policy, RoleName=name, PolicyArn=d.old))


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
