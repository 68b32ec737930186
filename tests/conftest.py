"""Shared fixtures: moto in-process with real boto3 clients, API-call counting, configs."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest

from mlflow_ecs import config, engine
from mlflow_ecs.aws import AwsContext
from mlflow_ecs.steps.base import Poll, StepContext

REGION = "eu-west-1"
CLIENT_ID = "test-client-id.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-known-test-secret-value-123"  # a known value to look for in output
ENV = {"OAUTH2_PROXY_CLIENT_ID": CLIENT_ID, "OAUTH2_PROXY_CLIENT_SECRET": CLIENT_SECRET}
READ_PREFIXES = ("Describe", "Get", "List", "Head")
FAST = Poll(interval=0.01, timeout=5.0)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, a region, and no way to reach real AWS."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # moto's services run no tasks otherwise


@pytest.fixture
def moto() -> Iterator[None]:
    from moto import mock_aws

    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield


class Calls:
    """Counts AWS API calls by 'service.Operation' through a botocore event hook."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def hook(self, event_name: str, **_: Any) -> None:
        # event_name: before-call.<service>.<Operation>
        _event, service, operation = event_name.split(".", 2)
        self.counts[f"{service}.{operation}"] += 1

    def mutating(self) -> dict[str, int]:
        return {
            k: v for k, v in self.counts.items() if not k.split(".", 1)[1].startswith(READ_PREFIXES)
        }

    def total(self) -> int:
        return sum(self.counts.values())

    def clear(self) -> None:
        self.counts.clear()


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def aws(moto: None, calls: Calls) -> AwsContext:
    return AwsContext(REGION, hooks=[("before-call.*.*", calls.hook)])


def make_config(
    data: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> config.Config:
    """A validated Config from a TOML-shaped dict (stack name 'mlflow' unless given)."""
    doc = {"stack": {"name": "mlflow"}} | (data or {})
    return config.parse(doc, ENV if env is None else env)


class FakeTime:
    """A clock that moves only when slept on: bounded waits without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Events:
    """A reporter that records (resource, state, detail)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, resource: str, state: str, detail: str = "") -> None:
        self.seen.append((resource, state, detail))

    def states(self, resource: str) -> list[str]:
        return [s for r, s, _ in self.seen if r == resource]


def step_context(aws: AwsContext, cfg: config.Config, delete_data: bool = False) -> StepContext:
    return engine.context(cfg, aws, Events(), FAST, delete_data=delete_data)
