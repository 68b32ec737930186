"""Runs the steps for up / down / status: owns their order, the overlap of long waits, and
the status model. Never prints: everything goes to the reporter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

from . import render
from .aws import AwsContext
from .changes import CREATE, Change, Plan
from .config import Config
from .errors import MlflowEcsError, UsageError
from .steps import (
    bucket,
    cluster,
    database,
    iam,
    loadbalancer,
    logs,
    network,
    secrets,
    security,
    service,
    taskdef,
)
from .steps.base import (
    KEPT,
    WARNING,
    Poll,
    Reporter,
    Resource,
    StepContext,
    aws_action,
    in_parallel,
    null_reporter,
)

STATUS_THREADS = 16
log = logging.getLogger(__name__)  # names of steps only, never a value


def context(
    cfg: Config,
    aws: AwsContext,
    report: Reporter = null_reporter,
    poll: Poll | None = None,
    delete_data: bool = False,
) -> StepContext:
    return StepContext(
        aws=aws,
        cfg=cfg,
        names=cfg.names(aws.account_id, aws.region),
        report=report,
        poll=poll or Poll.from_env(),
        delete_data=delete_data,
    )


def warnings(cfg: Config) -> list[str]:
    """What `up` must say loudly every time, because it weakens the stack."""
    found = []
    lb = cfg.load_balancer
    if not lb.certificate_arn:
        found.append(
            "HTTP only: load_balancer.certificate_arn is empty, so traffic (tokens included) is "
            "unencrypted and the browser login will fail: Google accepts only HTTPS redirect URIs. "
            "Bearer tokens still work. Set certificate_arn and domain to fix it."
        )
    elif not lb.domain:
        found.append(
            "No load_balancer.domain: the browser login needs a redirect URL on your domain; "
            "only bearer tokens will work until you set it."
        )
    if "*" in render.effective_email_domains(cfg):
        found.append(
            "oauth2_proxy.email_domains allows '*': every account of the provider can log in. "
            "Set email_domains = ['your-company.com'] to restrict it."
        )
    return found


@dataclass
class UpResult:
    url: str
    task_definition: str
    warnings: list[str] = field(default_factory=list)


def _join(futures: list[Future[None]]) -> None:
    for f in futures:
        f.result()


Read = Callable[[], Any]


def _gather(pool: ThreadPoolExecutor, reads: dict[str, Read]) -> dict[str, Any]:
    """Run reads in parallel; results by key; the first error (in key order) is raised."""
    futures = {key: pool.submit(read) for key, read in reads.items()}
    return {key: f.result() for key, f in futures.items()}


def prefetch(sc: StepContext, pool: ThreadPoolExecutor) -> None:
    """Read the whole stack before any change: independent reads in parallel, in two rounds.

    Every find checks ownership, so a same-named resource of someone else's stops `up` before
    anything is touched. The steps then use these reads once instead of asking again.
    """
    n = sc.names
    first: dict[str, Read] = {
        "network": lambda: network.find_vpc(sc),
        "bucket": lambda: bucket.find(sc),
        "bucket_settings": lambda: bucket.read_settings(sc),
        "secrets": lambda: secrets.find(sc),
        "db_subnet_group": lambda: database.find_subnet_group(sc),
        "db_cluster": lambda: database.find_cluster(sc),
        "db_instance": lambda: database.find_instance(sc),
        "logs": lambda: logs.find(sc),
        "cluster": lambda: cluster.find(sc),
        "loadbalancer": lambda: loadbalancer.find(sc),
        "service": lambda: service.find_checked(sc),
        "taskdef": lambda: taskdef.find(sc),
    }
    for role in (n.execution_role, n.task_role):
        first[f"role:{role}"] = partial(iam.find, sc, role)
        first[f"policies:{role}"] = partial(iam.read_policies, sc, role)
    for name in secrets.given_values(sc):
        first[f"value:{name}"] = partial(secrets.read_value, sc, name)
    if sc.cfg.network.vpc_id:
        first["given_subnets"] = lambda: network.read_given_subnets(sc)
    # A read the caller already made (the OAuth check lists the secrets) is not made again.
    sc.found.update(_gather(pool, {k: v for k, v in first.items() if k not in sc.found}))

    second: dict[str, Read] = {}
    vpc = sc.found["network"]
    if vpc is not None:
        vpc_id = sc.out.vpc_id = vpc["VpcId"]
        second["security"] = lambda: security.find(sc)
        if not sc.cfg.network.vpc_id:
            second["subnets"] = lambda: network.read_subnets(sc, vpc_id)
            second["gateways"] = lambda: network.read_gateways(sc, vpc_id)
            second["route_tables"] = lambda: network.read_route_tables(sc, vpc_id)
    if sc.found["db_cluster"] is None:  # a new cluster is restored from the latest snapshot
        second["db_snapshot"] = lambda: database.latest_final_snapshot(sc)
    alb = sc.found["loadbalancer"][0]
    if alb is not None:
        arn = alb["LoadBalancerArn"]
        second["lb_attributes"] = lambda: loadbalancer.read_attributes(sc, arn)
        second["listeners"] = lambda: loadbalancer.read_listeners(sc, arn)
    svc, latest = sc.found["service"], sc.found["taskdef"]
    if svc and (latest is None or latest["taskDefinitionArn"] != svc["taskDefinition"]):
        second["taskdef_current"] = lambda: taskdef.find(sc, svc["taskDefinition"])
    sc.found.update(_gather(pool, second))


def read(sc: StepContext) -> None:
    """Every read of the stack, in parallel (see prefetch)."""
    with ThreadPoolExecutor(max_workers=STATUS_THREADS, thread_name_prefix="read") as pool:
        prefetch(sc, pool)


def compute_plan(sc: StepContext, values: dict[str, str] | None = None) -> Plan:
    """What `up` would do, from the reads already made (no AWS call when they are all there).

    The same compare functions as `up`'s steps, in `up`'s order, on a copy of the context whose
    outputs are the ids that exist, or placeholders for what `up` would make. ``values``: the
    OAuth values `up` was given (default: the config's and the environment's).
    """
    p = sc.planning()
    changes = [
        *network.plan(p),
        *security.plan(p),
        *secrets.plan(p, values),
        *database.plan(p),
        *bucket.plan(p),
        *iam.plan(p),
        *logs.plan(p),
        *cluster.plan(p),
        *loadbalancer.plan(p),
    ]
    svc = p.peek("service", lambda: service.find_checked(p))
    changes += [*taskdef.plan(p, svc["taskDefinition"] if svc else ""), *service.plan(p)]
    return Plan(sc.names.stack, sc.aws.region, changes)


def plan(sc: StepContext) -> Plan:
    """`mlflow-ecs plan`: read everything, change nothing."""
    read(sc)
    return compute_plan(sc)


class Blocked(UsageError):
    """The config asks for a change `up` will not make."""


def refuse_blocked(planned: Plan) -> None:
    if planned.blocked:
        lines = "; ".join(f"{c.kind} {c.name}: {c.blocked}" for c in planned.blocked)
        raise Blocked(f"up cannot make this change, so it changed nothing: {lines}")


Review = Callable[[Plan], None]


def up(
    sc: StepContext,
    prompt: secrets.Prompt | None = None,
    lock: Callable[[], AbstractContextManager[Any]] | None = None,
    review: Review | None = None,
) -> UpResult:
    """Find → create if missing → update if changed → wait until ready, step by step.

    First the OAuth client check (a missing one stops everything), then the lock (`lock`, so
    one up/down of a stack runs at a time), then every read, in parallel (nothing changes if
    any of them fails), and the plan made of them: a change `up` will not make stops it here;
    when the stack exists, ``review`` sees the plan first (to show it, and to stop `up` by
    raising when a replacement is not confirmed). Then the steps, in order; the database is
    started as soon as its network, security group and password exist, and waited for in the
    background, the load balancer too. Both are joined only before the service, the one step
    that needs them ready.
    """
    log.debug("up %s: preflight", sc.names.stack)
    values = secrets.preflight(sc, prompt)  # one read; stops before any change (and the lock)
    with lock() if lock else nullcontext():
        read(sc)
        planned = compute_plan(sc, values)
        refuse_blocked(planned)
        if review is not None and planned.exists:
            review(planned)
        result = _up_locked(sc, values)
    log.debug("up %s: done", sc.names.stack)
    return result


def _up_locked(sc: StepContext, values: dict[str, str]) -> UpResult:
    log.debug("up %s: read %d resources; steps start", sc.names.stack, len(sc.found))
    warned = warnings(sc.cfg)
    for text in warned:
        sc.report("warning", WARNING, text)
    current = sc.found.get("service")

    def network_and_groups() -> None:
        network.ensure(sc)
        security.ensure(sc)

    in_parallel([network_and_groups, lambda: secrets.ensure(sc, values)])
    database.start(sc)  # needs the private subnets, the db group and the password
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="wait") as pool:
        background = [pool.submit(database.finish, sc)]
        try:
            network.ensure_internet(sc)
            bucket.ensure(sc)
            iam.ensure(sc)
            logs.ensure(sc)
            cluster.ensure(sc)
            loadbalancer.ensure(sc)
            background.append(pool.submit(loadbalancer.wait, sc))
            taskdef.ensure(sc, current["taskDefinition"] if current else "")
            log.debug("up %s: waiting for the database and the load balancer", sc.names.stack)
            _join(background)
        except BaseException:
            sc.cancel.set()  # background waits stop at their next poll
            raise
    sc.found.pop("service", None)
    service.ensure(sc, current)
    return UpResult(render.public_url(sc.cfg, sc.out.alb_dns), sc.out.task_definition_arn, warned)


@dataclass
class StackStatus:
    stack: str
    region: str
    resources: list[Resource]
    url: str
    running: int
    desired: int
    task_definition: str
    drift: list[Change] = field(default_factory=list)
    drift_error: str = ""

    @property
    def exists(self) -> bool:
        """Anything of the stack left (a referenced VPC of the user's does not count)."""
        return any(
            r.present and not r.detail.endswith("(yours, referenced)") for r in self.resources
        )

    @property
    def healthy(self) -> bool:
        bad_targets = any(
            "unhealthy" in r.detail for r in self.resources if r.kind == "target group"
        )
        everything = all(r.present for r in self.resources)
        svc = next((r for r in self.resources if r.kind == "service"), None)
        return everything and svc is not None and svc.state == "steady" and not bad_targets

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "exists": self.exists,
            "healthy": self.healthy,
            "url": self.url,
            "service": {
                "running": self.running,
                "desired": self.desired,
                "task_definition": self.task_definition,
            },
            "resources": [asdict(r) | {"present": r.present} for r in self.resources],
            "drift": [c.to_dict() for c in self.drift],
            "drift_error": self.drift_error,
        }


def drift(sc: StepContext) -> tuple[list[Change], str]:
    """What differs from the config in resources that exist (what `up` would update, replace
    or delete), and why it could not be told, if it could not."""
    try:
        read(sc)
        planned = compute_plan(sc)
    except MlflowEcsError as err:
        return [], err.message
    return [c for c in planned.changes if c.changed and c.action != CREATE], ""


def status(sc: StepContext, with_drift: bool = True) -> StackStatus:
    """Describe every resource (and, ``with_drift``, what differs from the config: the reads
    are made once, in parallel, and serve both); independent describes run in parallel."""
    differs, problem = drift(sc) if with_drift else ([], "")
    first: dict[str, Callable[[StepContext], Any]] = {
        "network": network.describe,
        "bucket": bucket.describe,
        "secrets": secrets.describe,
        "database": database.describe,
        "iam": iam.describe,
        "logs": logs.describe,
        "cluster": cluster.describe,
        "loadbalancer": loadbalancer.describe,
        "service": service.describe,
    }
    with ThreadPoolExecutor(max_workers=STATUS_THREADS, thread_name_prefix="status") as pool:
        futures = {name: pool.submit(fn, sc) for name, fn in first.items()}
        results = {name: f.result() for name, f in futures.items()}
        service_rows, svc = results.pop("service")
        td_arn = svc["taskDefinition"] if svc else ""
        second = {
            "security": pool.submit(security.describe, sc),
            "taskdef": pool.submit(taskdef.describe, sc, td_arn),
        }
        results |= {name: f.result() for name, f in second.items()}
    order = [
        "network",
        "security",
        "bucket",
        "secrets",
        "database",
        "iam",
        "logs",
        "cluster",
        "loadbalancer",
        "taskdef",
    ]
    rows = [_mark(row, differs) for row in [r for n in order for r in results[n]] + service_rows]
    return StackStatus(
        stack=sc.names.stack,
        region=sc.aws.region,
        resources=rows,
        url=render.public_url(sc.cfg, sc.out.alb_dns),
        running=int(svc.get("runningCount", 0)) if svc else 0,
        desired=int(svc.get("desiredCount", 0)) if svc else 0,
        task_definition=td_arn,
        drift=differs,
        drift_error=problem,
    )


def _mark(row: Resource, differs: list[Change]) -> Resource:
    """A row whose resource differs from the config says so in its detail."""
    names = [c.summary(3) for c in differs if c.name == row.name and c.kind.startswith(row.kind)]
    if not names:
        return row
    return replace(row, detail=f"{row.detail}; differs: {', '.join(names)}".lstrip("; "))


def what_down_removes(sc: StepContext, current: StackStatus) -> tuple[list[str], list[str]]:
    """(what will be removed, what will be kept), for the confirmation prompt."""
    removed, kept = [], []
    for r in current.resources:
        if not r.present:
            continue
        label = f"{r.kind} {r.name}"
        if r.kind == "vpc" and sc.cfg.network.vpc_id:
            kept.append(f"{label} (yours)")
        elif r.kind == "bucket" and not sc.delete_data:
            kept.append(f"{label} and every object in it")
        elif r.kind == "secret" and not sc.delete_data:
            days = secrets.RECOVERY_WINDOW_DAYS
            kept.append(f"{label} (scheduled for deletion, {days}-day recovery window)")
        elif r.kind == "database cluster" and not sc.delete_data:
            removed.append(f"{label} (after a final snapshot, which `up` restores)")
        else:
            removed.append(label)
    if sc.delete_data:
        removed.append(f"every final snapshot named {sc.names.snapshot_prefix}*")
    return removed, kept


def down(sc: StepContext) -> None:
    """Remove in reverse order; independent deletions run together. Data is kept unless asked.

    After the service: the database chain (writer, then cluster, then subnet group), the load
    balancer chain, and everything else at once; then the security groups beside the VPC's
    gateway, subnets and routes; the VPC last.
    """
    log.debug("down %s: start", sc.names.stack)
    database.check_deletable(sc)  # refuses before any change
    service.delete(sc)
    network.describe(sc)  # the VPC id, for the groups and the VPC's contents

    def rest() -> None:
        steps = [
            taskdef.delete,
            cluster.delete,
            logs.delete,
            iam.delete,
            secrets.delete,
            bucket.delete,
        ]
        in_parallel([partial(step, sc) for step in steps], workers=6)

    try:
        in_parallel([lambda: database.delete(sc), lambda: loadbalancer.delete(sc), rest], workers=3)
    except BaseException:
        sc.cancel.set()
        raise
    in_parallel([lambda: security.delete(sc), lambda: network.delete_contents(sc)])
    network.delete(sc)
    log.debug("down %s: done", sc.names.stack)
    if not sc.delete_data:
        sc.report(
            "data", KEPT, "bucket, final snapshot and (recoverable) secrets: `up` brings them back"
        )


def registered_task_definition(sc: StepContext, arn: str) -> dict[str, Any] | None:
    """The task definition as AWS holds it (the one the service runs), for showing it."""
    if not arn:
        return None
    with aws_action(f"read the task definition {arn}"):
        return taskdef.find(sc, arn)


def kept_snapshot(sc: StepContext) -> str:
    """The final snapshot `down` left (what the next `up` restores), or ''."""
    if sc.delete_data:
        return ""
    snap = database.latest_final_snapshot(sc)
    return str(snap["DBClusterSnapshotIdentifier"]) if snap else ""
