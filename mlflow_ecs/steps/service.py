"""The ECS service: Fargate, awsvpc with the tasks group, behind the target group, with a
circuit breaker that rolls back; waited until its deployment completes with our revision."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .. import render
from ..aws import ecs_tags, tag_dict
from ..changes import Change, Diff, change, tag_diffs
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
    require_owned,
    retry_on,
    sync_ecs_tags,
    wait_until,
)


def find(sc: StepContext) -> dict[str, Any] | None:
    """The service unless missing or INACTIVE (deleted)."""
    try:
        got = sc.aws.ecs.describe_services(
            cluster=sc.names.ecs_cluster, services=[sc.names.service], include=["TAGS"]
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ClusterNotFoundException":
            return None
        raise
    services = [s for s in got.get("services", []) if s.get("status") != "INACTIVE"]
    if not services:
        return None
    svc = dict(services[0])
    require_owned(
        "ECS service", sc.names.service, tag_dict(svc.get("tags"), "key", "value"), sc.names.stack
    )
    return svc


def find_checked(sc: StepContext) -> dict[str, Any] | None:
    with aws_action(f"find the ECS service {sc.names.service}"):
        return find(sc)


def _subnets(sc: StepContext) -> tuple[list[str], bool]:
    """Tasks go in the public subnets with a public IP (outbound to the OAuth provider without
    NAT), or in the private subnets when network.task_subnets = 'private' (you provide NAT)."""
    if sc.cfg.network.task_subnets == "private":
        return sc.out.private_subnets, False
    return sc.out.public_subnets, True


def desired_network(sc: StepContext) -> dict[str, Any]:
    subnets, public_ip = _subnets(sc)
    return render.service_network(subnets, sc.out.security_groups["tasks"], public_ip)


def _network_text(net: dict[str, Any]) -> str:
    return (
        f"subnets {', '.join(sorted(net.get('subnets', [])))}; "
        f"groups {', '.join(sorted(net.get('securityGroups', [])))}; "
        f"public IP {net.get('assignPublicIp', 'DISABLED')}"
    )


def _lb_text(lbs: list[Any]) -> str:
    return "; ".join(
        f"{lb.get('containerName')}:{lb.get('containerPort')} -> {lb.get('targetGroupArn')}"
        for lb in lbs
    )


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


# update_service argument of each attribute a change may name.
_UPDATE = {
    "task definition": "taskDefinition",
    "desired count": "desiredCount",
    "network": "networkConfiguration",
    "load balancer": "loadBalancers",
    "health check grace seconds": "healthCheckGracePeriodSeconds",
    "deployment configuration": "deploymentConfiguration",
    "redeploy": "forceNewDeployment",
}


def _desired(sc: StepContext) -> dict[str, Any]:
    return {
        "taskDefinition": sc.out.task_definition_arn,
        "desiredCount": sc.cfg.service.desired_count,
        "networkConfiguration": desired_network(sc),
        "loadBalancers": render.service_load_balancers(sc.cfg, sc.out.target_group_arn),
        "healthCheckGracePeriodSeconds": sc.cfg.service.health_check_grace_seconds,
        "deploymentConfiguration": render.DEPLOYMENT_CONFIGURATION,
        "forceNewDeployment": True,
    }


def compare(sc: StepContext, svc: dict[str, Any] | None) -> Change:
    name, want = sc.names.service, _desired(sc)
    count = f"{sc.cfg.service.desired_count} task(s)"
    if svc is None:
        return change("service", name, [], created=True, note=count)
    if svc.get("status") == "DRAINING":
        note = f"{count}; the old one is still draining: up waits for it to go first"
        return change("service", name, [], created=True, note=note)
    diffs = []
    if svc.get("taskDefinition") != want["taskDefinition"]:
        diffs.append(
            Diff("task definition", _short(svc["taskDefinition"]), _short(want["taskDefinition"]))
        )
    if svc.get("desiredCount") != want["desiredCount"]:
        diffs.append(Diff("desired count", svc.get("desiredCount"), want["desiredCount"]))
    have_net = svc.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
    want_net = want["networkConfiguration"]["awsvpcConfiguration"]
    if (
        sorted(have_net.get("subnets", [])) != want_net["subnets"]
        or sorted(have_net.get("securityGroups", [])) != want_net["securityGroups"]
        or have_net.get("assignPublicIp", "DISABLED") != want_net["assignPublicIp"]
    ):
        diffs.append(Diff("network", _network_text(have_net), _network_text(want_net)))
    lbs = want["loadBalancers"]
    have_lbs = [{k: lb.get(k) for k in lbs[0]} for lb in svc.get("loadBalancers", [])]
    if have_lbs != lbs:
        diffs.append(Diff("load balancer", _lb_text(have_lbs) or None, _lb_text(lbs)))
    grace = want["healthCheckGracePeriodSeconds"]
    if "healthCheckGracePeriodSeconds" in svc and svc["healthCheckGracePeriodSeconds"] != grace:
        diffs.append(
            Diff("health check grace seconds", svc["healthCheckGracePeriodSeconds"], grace)
        )
    breaker = svc.get("deploymentConfiguration", {}).get("deploymentCircuitBreaker")
    want_breaker = render.DEPLOYMENT_CONFIGURATION["deploymentCircuitBreaker"]
    if breaker is not None and breaker != want_breaker:
        diffs.append(Diff("deployment configuration", breaker, want_breaker))
    if sc.out.secrets_changed:
        diffs.append(Diff("redeploy", None, "new tasks (a secret they read changed)"))
    diffs += tag_diffs(sc.tags, tag_dict(svc.get("tags"), "key", "value"))
    note = "" if is_steady(svc) else f"{_state(svc)}: up waits for it"
    return change("service", name, diffs, note=note)


def plan(sc: StepContext) -> list[Change]:
    return [compare(sc, sc.peek("service", lambda: find_checked(sc)))]


IAM_NOT_READY = {"InvalidParameterException", "AccessDeniedException"}


def ensure(sc: StepContext, svc: dict[str, Any] | None) -> None:
    """Create or update the service (``svc``: what find_checked returned) and wait for it."""
    ecs, name = sc.aws.ecs, sc.names.service
    if svc is not None and svc.get("status") == "DRAINING":
        # A `down` stopped after deleting it: a draining service cannot be updated, and its
        # name is free again only once it is INACTIVE. Wait for that, then create it anew.
        _wait_inactive(sc)
        svc = None
    planned, want = compare(sc, svc), _desired(sc)
    with aws_action(f"set up the ECS service {name}"):
        if svc is None:
            sc.report("service", CREATING, f"{name}, {sc.cfg.service.desired_count} task(s)")
            args = {
                "cluster": sc.names.ecs_cluster,
                "serviceName": name,
                "taskDefinition": want["taskDefinition"],
                "desiredCount": want["desiredCount"],
                "launchType": "FARGATE",
                "platformVersion": "LATEST",
                "networkConfiguration": want["networkConfiguration"],
                "loadBalancers": want["loadBalancers"],
                "healthCheckGracePeriodSeconds": want["healthCheckGracePeriodSeconds"],
                "deploymentConfiguration": want["deploymentConfiguration"],
                "propagateTags": "SERVICE",
                "enableECSManagedTags": True,
                "tags": ecs_tags(sc.tags),
            }
            # A role made seconds ago may not be usable by ECS yet (IAM is eventually consistent).
            retry_on(sc, IAM_NOT_READY, lambda: ecs.create_service(**args), match="role")
        else:
            update = {arg: want[arg] for label, arg in _UPDATE.items() if planned.has(label)}
            if not planned.changed:
                sc.report("service", UNCHANGED, f"{name} ({_state(svc)})")
                if is_steady(svc) and rollout_failure(sc, svc) is None:
                    return  # else: wait for the deployment under way
            else:
                sc.report("service", UPDATING, f"{name}: {planned.summary()}")
            if update:
                ecs.update_service(cluster=sc.names.ecs_cluster, service=name, **update)
            sync_ecs_tags(sc, svc["serviceArn"], planned)
    wait(sc)


def _primary(svc: dict[str, Any]) -> dict[str, Any]:
    """The service's PRIMARY deployment (the one being rolled out), or {}."""
    found = (d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY")
    return dict(next(found, {}))


def rollout_failure(sc: StepContext, svc: dict[str, Any]) -> str | None:
    primary = _primary(svc)
    if primary.get("rolloutState") == "FAILED":
        events = "; ".join(e.get("message", "") for e in svc.get("events", [])[:3])
        reason = primary.get("rolloutStateReason", "")
        return f"the deployment failed and was rolled back ({reason}) {events}".strip()
    if svc.get("taskDefinition") != sc.out.task_definition_arn and sc.out.task_definition_arn:
        running, ours = svc.get("taskDefinition"), sc.out.task_definition_arn
        return f"the service runs {running}, not {ours} (rolled back?)"
    return None


def is_steady(svc: dict[str, Any]) -> bool:
    primary = [d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"]
    rollout_done = all(d.get("rolloutState", "COMPLETED") == "COMPLETED" for d in primary)
    only_one = len(svc.get("deployments", [])) <= 1
    return bool(rollout_done and only_one and svc.get("runningCount") == svc.get("desiredCount"))


def _state(svc: dict[str, Any]) -> str:
    primary = _primary(svc)
    return (
        f"{svc.get('runningCount', 0)}/{svc.get('desiredCount', 0)} running, "
        f"rollout {primary.get('rolloutState', 'n/a')}"
    )


def wait(sc: StepContext) -> None:
    """Until the deployment has completed with our revision and every task runs (bounded)."""

    def probe() -> dict[str, Any]:
        with aws_action(f"read the ECS service {sc.names.service}"):
            return find(sc) or {"status": "missing"}

    svc = wait_until(
        sc,
        "service",
        probe,
        done=lambda s: is_steady(s) and rollout_failure(sc, s) is None,
        describe=_state,
        failed=lambda s: (
            "the service disappeared" if s.get("status") == "missing" else rollout_failure(sc, s)
        ),
    )
    sc.report("service", READY, _state(svc))


def describe(sc: StepContext) -> tuple[list[Resource], dict[str, Any] | None]:
    svc = sc.take("service", lambda: find_checked(sc))
    if svc is None:
        return [Resource("service", sc.names.service)], None
    state = "steady" if is_steady(svc) else "deploying"
    primary = _primary(svc)
    if primary.get("rolloutState") == "FAILED":
        state = "failed"
    return [Resource("service", sc.names.service, svc["serviceArn"], state, _state(svc))], svc


def delete(sc: StepContext) -> None:
    ecs, name = sc.aws.ecs, sc.names.service
    svc = sc.take("service", lambda: find_checked(sc))
    if svc is None:
        sc.report("service", DELETED, "already gone")
        return
    sc.report("service", DELETING, f"{name}: stopping its tasks")
    with aws_action(f"delete the ECS service {name}"):
        # force: ECS scales the service to zero itself and drains it (one call, not two).
        ecs.delete_service(cluster=sc.names.ecs_cluster, service=name, force=True)

    _wait_inactive(sc)
    sc.report("service", DELETED, name)


def _wait_inactive(sc: StepContext) -> None:
    """Until the deleted service has drained (its tasks stopped) and is INACTIVE (bounded)."""

    def probe() -> dict[str, Any]:
        with aws_action(f"read the ECS service {sc.names.service}"):
            return find(sc) or {"status": "INACTIVE"}

    wait_until(
        sc,
        "service",
        probe,
        done=lambda s: s.get("status") == "INACTIVE",
        describe=lambda s: str(s.get("status")),
    )
