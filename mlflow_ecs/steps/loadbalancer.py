"""Application Load Balancer, target group (ip, oauth2-proxy port, GET /health), listeners."""

from __future__ import annotations

from typing import Any, Literal

from .. import render
from ..aws import tag_dict, tag_list
from ..changes import (
    CREATE,
    DELETE,
    REPLACE,
    UPDATE,
    Change,
    Diff,
    change,
    is_pending,
    pending,
    tag_diffs,
    tags_of,
)
from ..config import OWNER_TAG
from ..errors import UsageError
from .base import (
    CREATED,
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
    retry_on,
    wait_until,
)

LB_MISSING = {"LoadBalancerNotFound"}
TG_MISSING = {"TargetGroupNotFound"}


def _find_alb(sc: StepContext) -> dict[str, Any] | None:
    got = missing_on(LB_MISSING, lambda: sc.aws.elbv2.describe_load_balancers(Names=[sc.names.alb]))
    return dict(got["LoadBalancers"][0]) if got and got["LoadBalancers"] else None


def _find_tg(sc: StepContext) -> dict[str, Any] | None:
    got = missing_on(
        TG_MISSING, lambda: sc.aws.elbv2.describe_target_groups(Names=[sc.names.target_group])
    )
    return dict(got["TargetGroups"][0]) if got and got["TargetGroups"] else None


def find(
    sc: StepContext,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, dict[str, str]]]:
    """(load balancer, target group, arn -> tags); ownership checked for both."""
    with aws_action("find the load balancer and target group"):
        alb, tg = _find_alb(sc), _find_tg(sc)
        arns = [r[k] for r, k in ((alb, "LoadBalancerArn"), (tg, "TargetGroupArn")) if r]
        tags: dict[str, dict[str, str]] = {}
        if arns:
            for desc in sc.aws.elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
                tags[desc["ResourceArn"]] = tag_dict(desc.get("Tags"))
    if alb:
        require_owned(
            "load balancer", sc.names.alb, tags.get(alb["LoadBalancerArn"], {}), sc.names.stack
        )
    if tg:
        require_owned(
            "target group",
            sc.names.target_group,
            tags.get(tg["TargetGroupArn"], {}),
            sc.names.stack,
        )
    return alb, tg, tags


def _lb_subnets(sc: StepContext) -> list[str]:
    return sorted(
        sc.out.private_subnets if sc.cfg.load_balancer.internal else sc.out.public_subnets
    )


def _scheme(sc: StepContext) -> Literal["internal", "internet-facing"]:
    return "internal" if sc.cfg.load_balancer.internal else "internet-facing"


def compare_target_group(
    sc: StepContext, tg: dict[str, Any] | None, tags: dict[str, dict[str, str]]
) -> Change:
    name, port = sc.names.target_group, sc.cfg.oauth2_proxy.port
    if tg is None:
        return change("target group", name, [], created=True, note=f"ip, port {port}, GET /health")
    diffs = [
        Diff(f"health check {k}", tg.get(k), v)
        for k, v in render.HEALTH_CHECK.items()
        if tg.get(k) != v
    ]
    diffs += tag_diffs(sc.tags, tags.get(tg["TargetGroupArn"], {}))
    if tg.get("VpcId") != sc.out.vpc_id:
        vpc = tg.get("VpcId")
        blocked = (
            "the stack moved to another VPC, which needs every network resource anew: "
            "run `mlflow-ecs down` (your data is kept) and `up` again, or put back the VPC."
        )
        if is_pending(sc.out.vpc_id):  # the stack's own VPC is not found by its tag any more
            blocked = (
                f"the stack's VPC {vpc} (the target group is in it) has lost its tag "
                f"{OWNER_TAG}={sc.names.stack}: put it back (aws ec2 create-tags --resources "
                f"{vpc} --tags Key={OWNER_TAG},Value={sc.names.stack}) and run again."
            )
        return Change(
            "target group",
            name,
            REPLACE,
            (Diff("vpc", vpc, sc.out.vpc_id), *diffs),
            blocked=blocked,
        )
    # The port is not compared: ECS registers each task with the service's container port,
    # and the health check uses the port of each target, so the group's own is never used.
    return change("target group", name, diffs)


def compare_alb(
    sc: StepContext,
    alb: dict[str, Any] | None,
    tags: dict[str, dict[str, str]],
    attrs: dict[str, str],
) -> Change:
    name = sc.names.alb
    attr_diffs = [
        Diff(k, attrs.get(k), v) for k, v in desired_attributes(sc).items() if attrs.get(k) != v
    ]
    if alb is None:
        return change("load balancer", name, attr_diffs, created=True, note=_scheme(sc))
    diffs = []
    sgs = [sc.out.security_groups["alb"]]
    if sorted(alb.get("SecurityGroups", [])) != sgs:
        diffs.append(Diff("security groups", sorted(alb.get("SecurityGroups", [])), sgs))
    have_subnets = sorted(z["SubnetId"] for z in alb.get("AvailabilityZones", []))
    if have_subnets != _lb_subnets(sc):
        diffs.append(Diff("subnets", have_subnets, _lb_subnets(sc)))
    tag_changes = tag_diffs(sc.tags, tags.get(alb["LoadBalancerArn"], {}))
    if alb.get("Scheme") != _scheme(sc):  # a new one: every attribute is set on it
        attr_diffs = [Diff(k, None, v) for k, v in desired_attributes(sc).items()]
        return Change(
            "load balancer",
            name,
            REPLACE,
            (Diff("scheme", alb.get("Scheme"), _scheme(sc)), *diffs, *attr_diffs, *tag_changes),
            note="AWS cannot change a load balancer's scheme: up deletes it and makes a new one "
            "(a minute without service; its DNS name changes: update your DNS record)",
        )
    return change("load balancer", name, diffs + attr_diffs + tag_changes)


def compare_listeners(sc: StepContext, have: dict[int, dict[str, Any]]) -> list[Change]:
    changes = []
    want = render.listeners(sc.cfg, sc.out.target_group_arn)
    for port, spec in want.items():
        current = have.get(port)
        if current is None:
            changes.append(change("listener", str(port), listener_diffs(spec, {}), created=True))
        else:
            diffs = listener_diffs(spec, current) + tag_diffs(sc.tags, current.get("Tags", {}))
            changes.append(change("listener", str(port), diffs))
    for port, current in sorted(have.items()):
        if port not in want:
            changes.append(
                Change(
                    "listener",
                    str(port),
                    DELETE,
                    (Diff("protocol", current.get("Protocol"), None),),
                    note="no longer configured",
                )
            )
    return changes


def plan(sc: StepContext) -> list[Change]:
    alb, tg, tags = sc.peek("loadbalancer", lambda: find(sc))
    tg_change = compare_target_group(sc, tg, tags)
    sc.out.target_group_arn = tg["TargetGroupArn"] if tg else pending("target group")
    attrs, have = {}, {}
    if alb is not None:
        arn = alb["LoadBalancerArn"]
        attrs = sc.peek("lb_attributes", lambda: read_attributes(sc, arn))
        have = sc.peek("listeners", lambda: read_listeners(sc, arn))
    alb_change = compare_alb(sc, alb, tags, attrs)
    replaced = alb is None or alb_change.action == REPLACE
    sc.out.alb_dns = (
        pending("load balancer DNS name") if alb is None or replaced else alb["DNSName"]
    )
    return [tg_change, alb_change, *compare_listeners(sc, {} if replaced else have)]


def ensure(sc: StepContext) -> None:
    alb, tg, tags = sc.take("loadbalancer", lambda: find(sc))
    sc.out.target_group_arn = _ensure_target_group(sc, tg, tags)
    alb, listeners = _ensure_alb(sc, alb, tags)
    sc.out.alb_arn, sc.out.alb_dns = alb["LoadBalancerArn"], alb["DNSName"]
    sc.out.alb_state = str(alb.get("State", {}).get("Code", ""))
    _ensure_listeners(sc, alb["LoadBalancerArn"], listeners)


def _sync_tags(sc: StepContext, arn: str, planned: Change) -> None:
    to_set, to_remove = tags_of(planned)
    if to_set:
        sc.aws.elbv2.add_tags(ResourceArns=[arn], Tags=tag_list(to_set))
    if to_remove:
        sc.aws.elbv2.remove_tags(ResourceArns=[arn], TagKeys=to_remove)


def _ensure_target_group(
    sc: StepContext, tg: dict[str, Any] | None, tags: dict[str, dict[str, str]]
) -> str:
    elbv2, name, port = sc.aws.elbv2, sc.names.target_group, sc.cfg.oauth2_proxy.port
    planned = compare_target_group(sc, tg, tags)
    with aws_action(f"set up the target group {name}"):
        if tg is None:
            sc.report("target group", CREATING, f"{name} (ip, port {port}, GET /health)")
            made = elbv2.create_target_group(
                Name=name,
                Protocol="HTTP",
                Port=port,
                VpcId=sc.out.vpc_id,
                TargetType="ip",
                Tags=tag_list(sc.tags),
                **render.HEALTH_CHECK,  # type: ignore[arg-type]
            )
            sc.report("target group", CREATED, name)
            return str(made["TargetGroups"][0]["TargetGroupArn"])
        if planned.blocked:  # the engine refuses these before any change: never reached
            raise UsageError(f"target group {name}: {planned.blocked}")
        arn = tg["TargetGroupArn"]
        if not planned.changed:
            sc.report("target group", UNCHANGED, name)
            return str(arn)
        sc.report("target group", UPDATING, f"{name}: {planned.summary()}")
        if any(d.attribute.startswith("health check") for d in planned.diffs):
            elbv2.modify_target_group(TargetGroupArn=arn, **render.HEALTH_CHECK)  # type: ignore[arg-type]
        _sync_tags(sc, arn, planned)
    sc.report("target group", UPDATED, name)
    return str(arn)


def _ensure_alb(
    sc: StepContext, alb: dict[str, Any] | None, tags: dict[str, dict[str, str]]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The load balancer (made, updated or replaced) and its listeners as they are now."""
    elbv2, name = sc.aws.elbv2, sc.names.alb
    attrs: dict[str, str] = {}
    listeners: dict[int, dict[str, Any]] = {}
    if alb is not None:
        arn = alb["LoadBalancerArn"]
        attrs = sc.take("lb_attributes", lambda: read_attributes(sc, arn))
        listeners = sc.take("listeners", lambda: read_listeners(sc, arn))
    planned = compare_alb(sc, alb, tags, attrs)
    if alb is not None and planned.action == REPLACE:
        _replace(sc, alb)
        alb, attrs, listeners = None, {}, {}
        planned = compare_alb(sc, None, {}, {})
    with aws_action(f"set up the load balancer {name}"):
        if alb is None:
            sc.report("load balancer", CREATING, name)
            alb = dict(
                elbv2.create_load_balancer(
                    Name=name,
                    Subnets=_lb_subnets(sc),
                    SecurityGroups=[sc.out.security_groups["alb"]],
                    Scheme=_scheme(sc),
                    Type="application",
                    IpAddressType="ipv4",
                    Tags=tag_list(sc.tags),
                )["LoadBalancers"][0]
            )
        elif not planned.changed:
            sc.report("load balancer", UNCHANGED, name)
            return alb, listeners
        else:
            sc.report("load balancer", UPDATING, f"{name}: {planned.summary()}")
        arn = alb["LoadBalancerArn"]
        if planned.has("security groups"):
            elbv2.set_security_groups(
                LoadBalancerArn=arn, SecurityGroups=[sc.out.security_groups["alb"]]
            )
        if planned.has("subnets"):
            elbv2.set_subnets(LoadBalancerArn=arn, Subnets=_lb_subnets(sc))
        _sync_tags(sc, arn, planned)
        differ: list[Any] = [
            {"Key": k, "Value": v} for k, v in desired_attributes(sc).items() if planned.has(k)
        ]
        if differ:
            elbv2.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=differ)
    if planned.action != CREATE:  # a new one is ready once active (wait)
        sc.report("load balancer", UPDATED, name)
    return alb, listeners


def _replace(sc: StepContext, alb: dict[str, Any]) -> None:
    sc.report("load balancer", DELETING, f"{sc.names.alb}: replaced (scheme)")
    _delete_alb(sc, alb["LoadBalancerArn"])


def _delete_alb(sc: StepContext, arn: str) -> None:
    """Delete the load balancer (its listeners go with it) and wait until it is gone."""
    with aws_action(f"delete the load balancer {sc.names.alb}"):
        gone_ok(LB_MISSING, lambda: sc.aws.elbv2.delete_load_balancer(LoadBalancerArn=arn))
    wait_until(
        sc,
        "load balancer",
        lambda: _find_alb(sc) or {"State": {"Code": "deleted"}},
        done=lambda a: a["State"]["Code"] == "deleted",
        describe=lambda a: str(a["State"]["Code"]),
    )


def read_attributes(sc: StepContext, alb_arn: str) -> dict[str, str]:
    with aws_action("read the load balancer's attributes"):
        got = sc.aws.elbv2.describe_load_balancer_attributes(LoadBalancerArn=alb_arn)
    return {a["Key"]: a["Value"] for a in got["Attributes"]}


def read_listeners(sc: StepContext, alb_arn: str) -> dict[int, dict[str, Any]]:
    """port -> listener, with its tags (as "Tags": key -> value)."""
    elbv2 = sc.aws.elbv2
    with aws_action("read the load balancer's listeners"):
        listeners = elbv2.describe_listeners(LoadBalancerArn=alb_arn)["Listeners"]
        got: dict[int, dict[str, Any]] = {int(lst["Port"]): dict(lst) for lst in listeners}
        arns = [str(lst["ListenerArn"]) for lst in got.values()]
        tags = elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"] if arns else []
    by_arn = {str(t["ResourceArn"]): tag_dict(t.get("Tags")) for t in tags}
    for lst in got.values():
        lst["Tags"] = by_arn.get(str(lst["ListenerArn"]), {})
    return got


def desired_attributes(sc: StepContext) -> dict[str, str]:
    return {
        "idle_timeout.timeout_seconds": str(render.idle_timeout(sc.cfg)),
        "routing.http.drop_invalid_header_fields.enabled": "true",
    }


def _ensure_listeners(sc: StepContext, alb_arn: str, have: dict[int, dict[str, Any]]) -> None:
    elbv2 = sc.aws.elbv2
    want = render.listeners(sc.cfg, sc.out.target_group_arn)
    with aws_action("set up the load balancer's listeners"):
        for planned in compare_listeners(sc, have):
            port = int(planned.name)
            label = f"listener {port}"
            if planned.action == CREATE:
                sc.report(label, CREATING, want[port]["Protocol"])
                elbv2.create_listener(LoadBalancerArn=alb_arn, Tags=tag_list(sc.tags), **want[port])
                sc.report(label, CREATED, want[port]["Protocol"])
            elif planned.action == UPDATE:
                sc.report(label, UPDATING, planned.summary())
                arn = have[port]["ListenerArn"]
                if any(not d.attribute.startswith("tag ") for d in planned.diffs):
                    elbv2.modify_listener(ListenerArn=arn, **want[port])
                _sync_tags(sc, arn, planned)
                sc.report(label, UPDATED, want[port]["Protocol"])
            elif planned.action == DELETE:
                sc.report(label, DELETING, "no longer configured")
                elbv2.delete_listener(ListenerArn=have[port]["ListenerArn"])
                sc.report(label, DELETED, "no longer configured")
            else:
                sc.report(label, UNCHANGED, want[port]["Protocol"])


def _action_text(action: dict[str, Any]) -> str:
    if action.get("Type") == "forward":
        return f"forward to {action.get('TargetGroupArn')}"
    redirect = action.get("RedirectConfig") or {}
    if action.get("Type") == "redirect":
        port, code = redirect.get("Port", ""), redirect.get("StatusCode")
        return f"redirect to {redirect.get('Protocol')}:{port} ({code})"
    return str(action.get("Type"))


def listener_diffs(want: dict[str, Any], have: dict[str, Any]) -> list[Diff]:
    diffs = []
    if want["Protocol"] != have.get("Protocol"):
        diffs.append(Diff("protocol", have.get("Protocol"), want["Protocol"]))
    want_certs = [c["CertificateArn"] for c in want.get("Certificates", [])]
    have_certs = [c["CertificateArn"] for c in have.get("Certificates", [])]
    if want_certs != have_certs:
        diffs.append(Diff("certificate", have_certs or None, want_certs or None))
    # AWS fills in a default policy when none is given: only a different one is a change.
    ssl = have.get("SslPolicy")
    if "SslPolicy" in want and ssl != want["SslPolicy"] and (not have or ssl is not None):
        diffs.append(Diff("ssl policy", have.get("SslPolicy"), want["SslPolicy"]))
    want_actions = [_action_text(a) for a in want["DefaultActions"]]
    have_actions = [_action_text(a) for a in have.get("DefaultActions", [])]
    if [_action_key(a) for a in want["DefaultActions"]] != [
        _action_key(a) for a in have.get("DefaultActions", [])
    ]:
        diffs.append(Diff("default action", have_actions or None, want_actions))
    return diffs


def _action_key(action: dict[str, Any]) -> tuple[Any, ...]:
    redirect = action.get("RedirectConfig") or {}
    return (
        action.get("Type"),
        action.get("TargetGroupArn"),
        redirect.get("Protocol"),
        str(redirect.get("Port", "")),
        redirect.get("StatusCode"),
    )


def wait(sc: StepContext) -> None:
    """Until the load balancer is active (minutes on AWS). Runs in the background."""
    if sc.out.alb_state == "active":
        return
    wait_until(
        sc,
        "load balancer",
        lambda: _find_alb(sc) or {"State": {"Code": "missing"}},
        done=lambda a: a["State"]["Code"] == "active",
        describe=lambda a: str(a["State"]["Code"]),
        failed=lambda a: (
            a["State"].get("Reason") or "failed"
            if a["State"]["Code"] in {"failed", "missing"}
            else None
        ),
    )
    sc.report("load balancer", READY, sc.out.alb_dns)


def target_health(sc: StepContext) -> list[str]:
    if not sc.out.target_group_arn:
        return []
    with aws_action("read the target group's health"):
        got = sc.aws.elbv2.describe_target_health(TargetGroupArn=sc.out.target_group_arn)
    return [d["TargetHealth"].get("State", "unknown") for d in got["TargetHealthDescriptions"]]


def describe(sc: StepContext) -> list[Resource]:
    alb, tg, _ = sc.take("loadbalancer", lambda: find(sc))
    rows = []
    if alb is None:
        rows.append(Resource("load balancer", sc.names.alb))
    else:
        sc.out.alb_arn, sc.out.alb_dns = alb["LoadBalancerArn"], alb["DNSName"]
        rows.append(
            Resource(
                "load balancer",
                sc.names.alb,
                alb["DNSName"],
                alb["State"]["Code"],
                alb.get("Scheme", ""),
            )
        )
    if tg is None:
        rows.append(Resource("target group", sc.names.target_group))
    else:
        sc.out.target_group_arn = tg["TargetGroupArn"]
        health = target_health(sc)
        detail = ", ".join(f"{health.count(s)} {s}" for s in sorted(set(health))) or "no targets"
        rows.append(
            Resource("target group", sc.names.target_group, tg["TargetGroupArn"], "present", detail)
        )
    return rows


def delete(sc: StepContext) -> None:
    alb, tg, _ = sc.take("loadbalancer", lambda: find(sc))
    elbv2 = sc.aws.elbv2
    if alb is None:
        sc.report("load balancer", DELETED, "already gone")
    else:
        sc.report("load balancer", DELETING, sc.names.alb)
        _delete_alb(sc, alb["LoadBalancerArn"])
        sc.report("load balancer", DELETED, sc.names.alb)
    if tg is None:
        sc.report("target group", DELETED, "already gone")
        return
    sc.report("target group", DELETING, sc.names.target_group)
    with aws_action(f"delete the target group {sc.names.target_group}"):
        retry_on(
            sc,
            {"ResourceInUse"},
            lambda: gone_ok(
                TG_MISSING, lambda: elbv2.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
            ),
            attempts=20,
        )
    sc.report("target group", DELETED, sc.names.target_group)
