"""Runs the steps for up / down / status: owns their order, the overlap of long waits, and
the status model. Never prints: everything goes to the reporter."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from . import render
from .aws import AwsContext
from .config import Config
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
from .steps.base import KEPT, WARNING, Poll, Reporter, Resource, StepContext, null_reporter

STATUS_THREADS = 8


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


def up(sc: StepContext, prompt: secrets.Prompt | None = None) -> UpResult:
    """Find → create if missing → update if changed → wait until ready, step by step.

    The database is started early and waited for in the background; the load balancer too.
    Both are joined only before the service, the one step that needs them ready.
    """
    values = secrets.preflight(sc, prompt)  # read-only; stops before any change
    found = warnings(sc.cfg)
    for text in found:
        sc.report("warning", WARNING, text)
    network.ensure(sc)
    security.ensure(sc)
    bucket.ensure(sc)
    secrets.ensure(sc, values)
    database.start(sc)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="wait") as pool:
        background = [pool.submit(database.finish, sc)]
        try:
            iam.ensure(sc)
            logs.ensure(sc)
            cluster.ensure(sc)
            loadbalancer.ensure(sc)
            background.append(pool.submit(loadbalancer.wait, sc))
            current = service.find_checked(sc)
            taskdef.ensure(sc, current["taskDefinition"] if current else "")
            _join(background)
        except BaseException:
            sc.cancel.set()  # background waits stop at their next poll
            raise
    service.ensure(sc, current)
    return UpResult(render.public_url(sc.cfg, sc.out.alb_dns), sc.out.task_definition_arn, found)


@dataclass
class StackStatus:
    stack: str
    region: str
    resources: list[Resource]
    url: str
    running: int
    desired: int
    task_definition: str

    @property
    def exists(self) -> bool:
        """Anything of the stack left (a referenced VPC of the user's does not count)."""
        return any(r.present and not r.detail.endswith("(yours, referenced)") for r in self.resources)

    @property
    def healthy(self) -> bool:
        bad_targets = any("unhealthy" in r.detail for r in self.resources if r.kind == "target group")
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
            "service": {"running": self.running, "desired": self.desired, "task_definition": self.task_definition},
            "resources": [asdict(r) | {"present": r.present} for r in self.resources],
        }


def status(sc: StepContext) -> StackStatus:
    """Describe every resource; independent describes run in parallel."""
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
    order = ["network", "security", "bucket", "secrets", "database", "iam", "logs", "cluster", "loadbalancer", "taskdef"]
    rows = [row for name in order for row in results[name]] + service_rows
    return StackStatus(
        stack=sc.names.stack,
        region=sc.aws.region,
        resources=rows,
        url=render.public_url(sc.cfg, sc.out.alb_dns),
        running=int(svc.get("runningCount", 0)) if svc else 0,
        desired=int(svc.get("desiredCount", 0)) if svc else 0,
        task_definition=td_arn,
    )


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
            kept.append(f"{label} (scheduled for deletion, {secrets.RECOVERY_WINDOW_DAYS}-day recovery window)")
        elif r.kind == "database cluster" and not sc.delete_data:
            removed.append(f"{label} (after a final snapshot, which `up` restores)")
        else:
            removed.append(label)
    if sc.delete_data:
        removed.append(f"every final snapshot named {sc.names.snapshot_prefix}*")
    return removed, kept


def down(sc: StepContext) -> None:
    """Remove in reverse order; independent deletions run together. Data is kept unless asked."""
    database.check_deletable(sc)  # refuses before any change
    service.delete(sc)
    others = [taskdef.delete, cluster.delete, logs.delete, iam.delete, secrets.delete, bucket.delete]

    def rest(ctx: StepContext) -> None:
        for step in others:
            step(ctx)

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="down") as pool:
        futures = [pool.submit(fn, sc) for fn in (database.delete, loadbalancer.delete, rest)]
        try:
            _join(futures)
        except BaseException:
            sc.cancel.set()
            raise
    network.describe(sc)  # the VPC id, for the security groups
    security.delete(sc)
    network.delete(sc)
    if not sc.delete_data:
        sc.report("data", KEPT, "bucket, final snapshot and (recoverable) secrets: `up` brings them back")
