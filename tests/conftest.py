"""Shared fixtures: moto in-process with real boto3 clients, API-call counting, configs."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from typer.testing import CliRunner, Result

from mlflow_ecs import config, engine
from mlflow_ecs.aws import AwsContext
from mlflow_ecs.cli import app
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


# --- the CLI in-process ------------------------------------------------------------------------


def cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What every in-process CLI run here has: wide tables, fast polls, the OAuth client."""
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: one line per resource
    monkeypatch.setenv("MLFLOW_ECS_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("MLFLOW_ECS_WAIT_TIMEOUT", "30")
    monkeypatch.delenv("MLFLOW_ECS_CONFIG", raising=False)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


class Cli:
    """Runs `mlflow-ecs ARGS` in-process (no terminal); checks the exit code and that the
    client secret is not in the output; keeps every output to look for secret values in."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.outputs: list[str] = []

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = self.runner.invoke(app, list(args))
        self.outputs.append(result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, f"exit {result.exit_code} != {code}:\n{result.output}"
        assert CLIENT_SECRET not in result.output
        return result


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    cli_environment(monkeypatch)
    return Cli()


class MutatingCallError(AssertionError):
    """Raised by the read-only guards on any AWS operation that is not a read."""


def is_read(operation: str) -> bool:
    return operation.startswith(READ_PREFIXES)


class ApiCalls:
    """Every AWS operation any botocore client makes, as 'service.Operation'; with ``strict``,
    a mutating one fails; ``fail`` answers the named ones with an error code."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.strict = False
        self.fail: dict[str, str] = {}  # 'service.Operation' -> error code to answer with

    def mutating(self) -> list[str]:
        return [c for c in self.seen if not is_read(c.split(".", 1)[1])]

    def clear(self) -> None:
        self.seen.clear()


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    calls = ApiCalls()
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def record(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        name = f"{self.meta.service_model.service_name}.{operation}"
        calls.seen.append(name)
        if calls.strict and not is_read(operation):
            raise MutatingCallError(f"a mutating call: {name}")
        if name in calls.fail:
            error = {"Error": {"Code": calls.fail[name], "Message": "injected by the test"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    return calls
