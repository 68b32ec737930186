"""One `up` or `down` of a stack at a time: a lock held in an SSM parameter.

`put_parameter(Overwrite=False)` is atomic: the second writer gets ParameterAlreadyExists and
reads who holds the lock and since when. The lock is released on every way out (errors and
Ctrl-C included); `--force-unlock` breaks one left by a process that was killed.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from botocore.exceptions import ClientError

from .errors import MlflowEcsError, error_code, wrap_client_error
from .steps.base import StepContext


class StackLocked(MlflowEcsError):
    """Another up/down of the same stack is running (or died holding the lock)."""


@dataclass(frozen=True)
class Holder:
    who: str
    command: str
    since: str

    def describe(self) -> str:
        return f"{self.who} ({self.command}) since {self.since}"


def parameter_name(stack: str) -> str:
    return f"/mlflow-ecs/{stack}/lock"


def me(command: str) -> Holder:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return Holder(f"{user}@{socket.gethostname()} pid {os.getpid()}", command, now)


def current_holder(sc: StepContext) -> Holder | None:
    try:
        value = sc.aws.ssm.get_parameter(Name=parameter_name(sc.names.stack))["Parameter"]["Value"]
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return None
        raise wrap_client_error("read the stack lock", exc) from None
    try:
        data = json.loads(value)
        return Holder(str(data["who"]), str(data["command"]), str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return Holder("unknown", "unknown", "unknown")


def acquire(sc: StepContext, command: str, wait_seconds: float = 0.0) -> Holder:
    """Take the lock, waiting up to wait_seconds for a holder to finish. Bounded."""
    mine = me(command)
    name = parameter_name(sc.names.stack)
    start = sc.poll.clock()
    while True:
        try:
            sc.aws.ssm.put_parameter(
                Name=name,
                Value=json.dumps(mine.__dict__),
                Type="String",
                Overwrite=False,
                Description=f"mlflow-ecs: {command} of stack {sc.names.stack} in progress",
                Tags=[{"Key": k, "Value": v} for k, v in sorted(sc.tags.items())],
            )
            return mine
        except ClientError as exc:
            if error_code(exc) != "ParameterAlreadyExists":
                raise wrap_client_error("take the stack lock", exc) from None
        holder = current_holder(sc)
        if holder is None:
            continue  # released between our put and our read: try again
        if sc.poll.clock() - start >= wait_seconds:
            raise StackLocked(
                f"Stack {sc.names.stack!r} is locked by {holder.describe()}; nothing was changed.",
                "Wait for it to finish and run again (or --wait SECONDS). If that process is "
                "gone, run the same command with --force-unlock.",
            )
        sc.poll.sleep(sc.poll.interval)


def release(sc: StepContext, mine: Holder) -> None:
    """Delete the lock if it is still ours (a --force-unlock may have replaced it)."""
    holder = current_holder(sc)
    if holder is None or holder != mine:
        return
    force_unlock(sc)


def force_unlock(sc: StepContext) -> None:
    try:
        sc.aws.ssm.delete_parameter(Name=parameter_name(sc.names.stack))
    except ClientError as exc:
        if error_code(exc) != "ParameterNotFound":
            raise wrap_client_error("remove the stack lock", exc) from None


@contextmanager
def held(sc: StepContext, command: str, wait_seconds: float = 0.0) -> Iterator[Holder]:
    mine = acquire(sc, command, wait_seconds)
    try:
        yield mine
    finally:
        release(sc, mine)
