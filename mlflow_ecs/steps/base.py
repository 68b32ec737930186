"""What every step shares: its context, the outputs it hands on, events, bounded waits."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from ..aws import AwsContext, ecs_tags, tag_list
from ..changes import Change, tags_of
from ..config import OWNER_TAG, Config, Names
from ..errors import AwsError, NotOwnedError, WaitTimeout, error_code, wrap_client_error

T = TypeVar("T")

# Event states a step reports. The UI decides how they look.
CHECKING, CREATING, UPDATING, UNCHANGED, WAITING, READY = (
    "checking", "creating", "updating", "unchanged", "waiting", "ready",
)  # fmt: skip
DELETING, DELETED, KEPT, ABSENT, FAILED, WARNING = (
    "deleting", "deleted", "kept", "absent", "failed", "warning",
)  # fmt: skip
CREATED, UPDATED = "created", "updated"  # a creating / updating line's end


class Reporter(Protocol):
    def __call__(self, resource: str, state: str, detail: str = "") -> None: ...


def null_reporter(resource: str, state: str, detail: str = "") -> None:
    return None


@dataclass(frozen=True)
class Poll:
    """How often and how long waits poll. From the environment so benchmarks can compress time."""

    interval: float = 5.0
    timeout: float = 2400.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Poll:
        env = os.environ if env is None else env
        return cls(
            interval=float(env.get("MLFLOW_ECS_POLL_INTERVAL", "5")),
            timeout=float(env.get("MLFLOW_ECS_WAIT_TIMEOUT", "2400")),
        )


@dataclass
class Outputs:
    """What earlier steps found or made, handed to later ones. Filled by find/ensure."""

    vpc_id: str = ""
    vpc_owned: bool = False
    public_subnets: list[str] = field(default_factory=list)
    private_subnets: list[str] = field(default_factory=list)
    security_groups: dict[str, str] = field(default_factory=dict)  # role -> group id
    bucket: str = ""
    secret_arns: dict[str, str] = field(default_factory=dict)  # name -> ARN
    db_password: str = field(default="", repr=False)
    secrets_changed: bool = False
    db_endpoint: str = ""
    db_status: str = ""
    execution_role_arn: str = ""
    task_role_arn: str = ""
    cluster_arn: str = ""
    alb_arn: str = ""
    alb_dns: str = ""
    alb_state: str = ""
    target_group_arn: str = ""
    task_definition_arn: str = ""


@dataclass(frozen=True)
class Resource:
    """One line of `status`: what it is, its AWS id, and its state."""

    kind: str
    name: str
    id: str = ""
    state: str = "missing"
    detail: str = ""

    @property
    def present(self) -> bool:
        return self.state not in {"missing", "deleted"}


@dataclass
class StepContext:
    aws: AwsContext
    cfg: Config
    names: Names
    report: Reporter = null_reporter
    poll: Poll = field(default_factory=Poll)
    out: Outputs = field(default_factory=Outputs)
    cancel: threading.Event = field(default_factory=threading.Event)
    delete_data: bool = False
    # Reads made ahead of time (in parallel, before any change) by the engine, by key.
    found: dict[str, Any] = field(default_factory=dict)

    # When set, fresh reads are kept for the next take (status right before down --yes).
    remember: bool = False

    def take(self, key: str, read: Callable[[], T]) -> T:
        """The prefetched result of a read (used once: later reads go to AWS), or a fresh read."""
        if key in self.found:  # kept for the next take while remembering
            value = self.found[key] if self.remember else self.found.pop(key)
            return value  # type: ignore[no-any-return]
        value = read()
        if self.remember:
            self.found[key] = value
        return value

    def peek(self, key: str, read: Callable[[], T]) -> T:
        """Like take, but the read stays for the next take (`plan` reads, then `up` acts)."""
        if key not in self.found:
            self.found[key] = read()
        return self.found[key]  # type: ignore[no-any-return]

    def planning(self) -> StepContext:
        """A copy for computing the plan: its own outputs (placeholders for what does not
        exist yet), silent, sharing the reads."""
        return replace(self, out=Outputs(), report=null_reporter)

    @property
    def tags(self) -> dict[str, str]:
        return self.cfg.tags


def owned(tags: Mapping[str, str], stack: str) -> bool:
    return tags.get(OWNER_TAG) == stack


def require_owned(kind: str, name: str, tags: Mapping[str, str], stack: str) -> None:
    """A same-named resource without our tag is never adopted or deleted."""
    if owned(tags, stack):
        return
    holder = tags.get(OWNER_TAG)
    whose = f"stack {holder!r}" if holder else "something outside mlflow-ecs"
    raise NotOwnedError(
        f"The {kind} {name!r} already exists and belongs to {whose}, not to stack {stack!r}.",
        f"Choose another stack.name (or artifacts.bucket), or remove the {kind} yourself; "
        f"mlflow-ecs only adopts resources tagged {OWNER_TAG}={stack}.",
    )


def sync_ec2_tags(sc: StepContext, resource_id: str, planned: Change) -> None:
    """Set and remove the tags a change names, on an EC2 resource (VPC, subnet, group...)."""
    to_set, to_remove = tags_of(planned)
    if to_set:
        sc.aws.ec2.create_tags(Resources=[resource_id], Tags=tag_list(to_set))
    if to_remove:
        sc.aws.ec2.delete_tags(Resources=[resource_id], Tags=[{"Key": k} for k in to_remove])


def sync_ecs_tags(sc: StepContext, arn: str, planned: Change) -> None:
    """Set and remove the tags a change names, on an ECS resource (cluster, service, revision)."""
    to_set, to_remove = tags_of(planned)
    if to_set:
        sc.aws.ecs.tag_resource(resourceArn=arn, tags=ecs_tags(to_set))
    if to_remove:
        sc.aws.ecs.untag_resource(resourceArn=arn, tagKeys=to_remove)


@contextmanager
def aws_action(action: str, hint: str = "") -> Iterator[None]:
    """Wrap a ClientError once, at the step boundary, naming what we were doing."""
    try:
        yield
    except ClientError as exc:
        raise wrap_client_error(action, exc, hint) from None


def missing_on(codes: set[str], call: Callable[[], T]) -> T | None:
    """'Not found' is a value: None when the call fails with one of these codes."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in codes:
            return None
        raise


def gone_ok(codes: set[str], call: Callable[[], Any]) -> bool:
    """Delete; 'already gone' is success. True when something was deleted."""
    return missing_on(codes, call) is not None


def wait_until(
    sc: StepContext,
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool],
    describe: Callable[[T], str] = str,
    failed: Callable[[T], str | None] = lambda _: None,
    timeout: float | None = None,
) -> T:
    """Poll until done(state); bounded; raises with the last state seen."""
    limit = sc.poll.timeout if timeout is None else timeout
    start = sc.poll.clock()
    reported = False
    while True:
        probed = sc.poll.clock()
        state = probe()
        if done(state):
            return state
        if reason := failed(state):
            raise AwsError(
                f"{what} failed: {reason}", "Fix the cause and run the same command again."
            )
        elapsed = sc.poll.clock() - start
        if elapsed >= limit:
            raise WaitTimeout(
                f"Timed out after {elapsed:.0f}s waiting for {what}; last state: {describe(state)}",
                "It may still finish: run the same command again to keep waiting.",
            )
        if sc.cancel.is_set():
            raise AwsError(f"Stopped waiting for {what}: another step failed.")
        if not reported:
            sc.report(what, WAITING, describe(state))
            reported = True
        # One probe per interval (the probe's own round trip is part of the interval).
        sc.poll.sleep(max(0.0, probed + sc.poll.interval - sc.poll.clock()))


def retry_on(
    sc: StepContext,
    codes: set[str],
    call: Callable[[], T],
    attempts: int = 8,
    match: str = "",
) -> T:
    """Bounded retry of named eventual-consistency errors (IAM propagation, ENI release)."""
    for attempt in range(attempts):
        try:
            return call()
        except ClientError as exc:
            text = str(exc.response.get("Error", {}).get("Message", ""))
            retryable = error_code(exc) in codes and (not match or match in text.lower())
            if not retryable or attempt == attempts - 1:
                raise
            sc.poll.sleep(min(sc.poll.interval * (attempt + 1), 15.0))
    raise AssertionError("unreachable")


def in_parallel(calls: Sequence[Callable[[], T]], workers: int = 4) -> list[T]:
    """Run independent calls at once (boto3 clients are thread-safe); results in order.

    Every call runs to its end; the first error, in order, is raised.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]
