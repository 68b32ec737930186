"""Application Load Balancer, target group (ip, oauth2-proxy port, GET /health), listeners."""

from __future__ import annotations

from typing import Any

from .. import render
from ..aws import tag_dict, tag_list
from ..errors import UsageError
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
    retry_on,
    tags_differ,
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


def ensure(sc: StepContext) -> None:
    alb, tg, tags = sc.take("loadbalancer", lambda: find(sc))
    tg_arn = _ensure_target_group(sc, tg, tags)
    alb = _ensure_alb(sc, alb, tags)
    sc.out.alb_arn, sc.out.alb_dns = alb["LoadBalancerArn"], alb["DNSName"]
    sc.out.alb_state = str(alb.get("State", {}).get("Code", ""))
    sc.out.target_group_arn = tg_arn
    _ensure_listeners(sc, alb["LoadBalancerArn"], tg_arn)


def _sync_tags(sc: StepContext, arn: str, have: dict[str, str]) -> bool:
    to_set, to_remove = tags_differ(sc.tags, have)
    if to_set:
        sc.aws.elbv2.add_tags(ResourceArns=[arn], Tags=tag_list(to_set))
    if to_remove:
        sc.aws.elbv2.remove_tags(ResourceArns=[arn], TagKeys=to_remove)
    return bool(to_set or to_remove)


def _ensure_target_group(
    sc: StepContext, tg: dict[str, Any] | None, tags: dict[str, dict[str, str]]
) -> str:
    elbv2, name, port = sc.aws.elbv2, sc.names.target_group, sc.cfg.oauth2_proxy.port
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
            return str(made["TargetGroups"][0]["TargetGroupArn"])
        arn = tg["TargetGroupArn"]
        if tg.get("Port") != port or tg.get("VpcId") != sc.out.vpc_id:
            raise UsageError(
                f"The target group {name} uses port {tg.get('Port')} in {tg.get('VpcId')}; "
                f"the config asks for port {port} in {sc.out.vpc_id}, which needs a new "
                "target group.",
                "Run `mlflow-ecs down` (your data is kept) and `up` again, or keep the old port.",
            )
        changes = [k for k, v in render.HEALTH_CHECK.items() if tg.get(k) != v]
        if changes:
            elbv2.modify_target_group(TargetGroupArn=arn, **render.HEALTH_CHECK)  # type: ignore[arg-type]
        if _sync_tags(sc, arn, tags.get(arn, {})):
            changes.append("tags")
    sc.report("target group", UPDATING if changes else UNCHANGED, name)
    return str(arn)


def _ensure_alb(
    sc: StepContext, alb: dict[str, Any] | None, tags: dict[str, dict[str, str]]
) -> dict[str, Any]:
    elbv2, name = sc.aws.elbv2, sc.names.alb
    lb = sc.cfg.load_balancer
    sgs = [sc.out.security_groups["alb"]]
    with aws_action(f"set up the load balancer {name}"):
        if alb is None:
            sc.report("load balancer", CREATING, name)
            alb = dict(
                elbv2.create_load_balancer(
                    Name=name,
                    Subnets=_lb_subnets(sc),
                    SecurityGroups=sgs,
                    Scheme="internal" if lb.internal else "internet-facing",
                    Type="application",
                    IpAddressType="ipv4",
                    Tags=tag_list(sc.tags),
                )["LoadBalancers"][0]
            )
            attrs: dict[str, str] = {}
            changes = ["created"]
        else:
            scheme = "internal" if lb.internal else "internet-facing"
            if alb.get("Scheme") != scheme:
                raise UsageError(
                    f"The load balancer {name} is {alb.get('Scheme')}; "
                    "load_balancer.internal asks for "
                    f"{scheme}, which AWS cannot change in place.",
                    "Run `mlflow-ecs down` (your data is kept) and `up` again, "
                    "or revert the setting.",
                )
            changes = []
            if sorted(alb.get("SecurityGroups", [])) != sgs:
                elbv2.set_security_groups(
                    LoadBalancerArn=alb["LoadBalancerArn"], SecurityGroups=sgs
                )
                changes.append("security groups")
            have_subnets = sorted(z["SubnetId"] for z in alb.get("AvailabilityZones", []))
            if have_subnets != _lb_subnets(sc):
                elbv2.set_subnets(LoadBalancerArn=alb["LoadBalancerArn"], Subnets=_lb_subnets(sc))
                changes.append("subnets")
            if _sync_tags(sc, alb["LoadBalancerArn"], tags.get(alb["LoadBalancerArn"], {})):
                changes.append("tags")
            arn = alb["LoadBalancerArn"]
            attrs = sc.take("lb_attributes", lambda: read_attributes(sc, arn))
        want = desired_attributes(sc)
        differ: list[Any] = [{"Key": k, "Value": v} for k, v in want.items() if attrs.get(k) != v]
        if differ:
            elbv2.modify_load_balancer_attributes(
                LoadBalancerArn=alb["LoadBalancerArn"], Attributes=differ
            )
            if alb is not None and "created" not in changes:
                changes.append("attributes")
    label = "load balancer"
    if "created" not in changes:
        sc.report(
            label,
            UPDATING if changes else UNCHANGED,
            f"{name}: {', '.join(changes)}" if changes else name,
        )
    return alb


def read_attributes(sc: StepContext, alb_arn: str) -> dict[str, str]:
    with aws_action("read the load balancer's attributes"):
        got = sc.aws.elbv2.describe_load_balancer_attributes(LoadBalancerArn=alb_arn)
    return {a["Key"]: a["Value"] for a in got["Attributes"]}


def read_listeners(sc: StepContext, alb_arn: str) -> dict[int, dict[str, Any]]:
    """port -> listener."""
    with aws_action("read the load balancer's listeners"):
        got = sc.aws.elbv2.describe_listeners(LoadBalancerArn=alb_arn)["Listeners"]
    return {int(lst["Port"]): dict(lst) for lst in got}


def desired_attributes(sc: StepContext) -> dict[str, str]:
    return {
        "idle_timeout.timeout_seconds": str(render.idle_timeout(sc.cfg)),
        "routing.http.drop_invalid_header_fields.enabled": "true",
    }


def _ensure_listeners(sc: StepContext, alb_arn: str, tg_arn: str) -> None:
    elbv2 = sc.aws.elbv2
    want = render.listeners(sc.cfg, tg_arn)
    with aws_action("set up the load balancer's listeners"):
        have = sc.take("listeners", lambda: read_listeners(sc, alb_arn))
        for port, spec in want.items():
            current = have.get(port)
            if current is None:
                sc.report(f"listener {port}", CREATING, spec["Protocol"])
                elbv2.create_listener(LoadBalancerArn=alb_arn, Tags=tag_list(sc.tags), **spec)
            elif listener_differs(spec, current):
                sc.report(f"listener {port}", UPDATING, spec["Protocol"])
                elbv2.modify_listener(ListenerArn=current["ListenerArn"], **spec)
            else:
                sc.report(f"listener {port}", UNCHANGED, spec["Protocol"])
        for port, current in have.items():
            if port not in want:
                sc.report(f"listener {port}", DELETING, "no longer configured")
                elbv2.delete_listener(ListenerArn=current["ListenerArn"])


def _action_key(action: dict[str, Any]) -> tuple[Any, ...]:
    redirect = action.get("RedirectConfig") or {}
    return (
        action.get("Type"),
        action.get("TargetGroupArn"),
        redirect.get("Protocol"),
        str(redirect.get("Port", "")),
        redirect.get("StatusCode"),
    )


def listener_differs(want: dict[str, Any], have: dict[str, Any]) -> bool:
    if want["Protocol"] != have.get("Protocol"):
        return True
    want_certs = [c["CertificateArn"] for c in want.get("Certificates", [])]
    have_certs = [c["CertificateArn"] for c in have.get("Certificates", [])]
    if want_certs != have_certs:
        return True
    if "SslPolicy" in want and have.get("SslPolicy") not in (None, want["SslPolicy"]):
        return True
    return [_action_key(a) for a in want["DefaultActions"]] != [
        _action_key(a) for a in have.get("DefaultActions", [])
    ]


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
        with aws_action(f"delete the load balancer {sc.names.alb}"):
            gone_ok(
                LB_MISSING,
                lambda: elbv2.delete_load_balancer(LoadBalancerArn=alb["LoadBalancerArn"]),
            )
        wait_until(
            sc,
            "load balancer",
            lambda: _find_alb(sc) or {"State": {"Code": "deleted"}},
            done=lambda a: a["State"]["Code"] == "deleted",
            describe=lambda a: str(a["State"]["Code"]),
        )
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
