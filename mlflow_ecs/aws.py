"""One boto3 session, cached thread-safe clients, one retry policy.

The endpoint comes from the environment the usual botocore way (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_<SERVICE>``): that is how the tool is pointed at moto or LocalStack.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from . import redact
from .errors import AwsError, UsageError, wrap_client_error

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

# Standard retry mode: exponential backoff with jitter on throttling and transient errors, and
# a client-side retry quota so a broken endpoint is not hammered. Eight retries (nine attempts,
# botocore's `max_attempts` counts retries) ride out the bursts of throttling that ECS and ELBv2
# give when many describes run in parallel; AWS_MAX_ATTEMPTS overrides it (see retry_config).
RETRY_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=10,
    read_timeout=60,
    max_pool_connections=16,
)


def retry_config(env: Mapping[str, str]) -> BotoConfig:
    """RETRY_CONFIG, with the user's AWS_MAX_ATTEMPTS (botocore's own knob) when set: an
    explicit Config would otherwise override it (e.g. AWS_MAX_ATTEMPTS=1 fails fast on an
    unreachable endpoint instead of backing off for several seconds)."""
    given = env.get("AWS_MAX_ATTEMPTS", "").strip()
    if not given:
        return RETRY_CONFIG
    if not given.isdigit() or int(given) < 1:
        raise UsageError(
            f"AWS_MAX_ATTEMPTS: {given!r} is not a positive whole number.",
            "Set it to 1 or more (e.g. export AWS_MAX_ATTEMPTS=8), or unset it.",
        )
    # AWS_MAX_ATTEMPTS counts every attempt, the first included: botocore's total_max_attempts
    # (its `max_attempts` counts retries only).
    retries: Any = {"mode": "standard", "total_max_attempts": int(given)}
    return RETRY_CONFIG.merge(BotoConfig(retries=retries))


Hook = Callable[..., Any]

# Where secret values pass through botocore: request parameters and response fields.
SECRET_PARAMS = ("SecretString", "MasterUserPassword", "NewMasterUserPassword")
SECRET_RESULTS = ("SecretString", "RandomPassword")


def _register_params(params: Mapping[str, Any] | None = None, **_: Any) -> None:
    """Before botocore validates, serializes or logs a request: its secret values are known."""
    if params:
        redact.register(*(str(params[k]) for k in SECRET_PARAMS if params.get(k)))


def _register_results(parsed: Mapping[str, Any] | None = None, **_: Any) -> None:
    if parsed:
        redact.register(*(str(parsed[k]) for k in SECRET_RESULTS if parsed.get(k)))


def _log_call(event_name: str, **_: Any) -> None:
    """--verbose: each AWS operation, by name only (never its parameters)."""
    service, operation = event_name.split(".", 2)[1:]
    log.debug("AWS call %s.%s", service, operation)


# Registered before every other hook (GLOBAL_HOOKS and a context's own): a hook of a test
# that answers a call itself must not skip the registration.
REDACT_HOOKS: list[tuple[str, Hook]] = [
    ("before-parameter-build.secrets-manager", _register_params),
    ("before-parameter-build.rds", _register_params),
    ("after-call.secrets-manager", _register_results),
    ("before-call.*.*", _log_call),
]

# Event hooks every new client gets, besides the ones passed to AwsContext: botocore's own
# extension point, used by scripts/bench.py to add simulated latency around the real commands.
GLOBAL_HOOKS: list[tuple[str, Hook]] = []


class AwsContext:
    """What every step needs to talk to AWS: clients, region, account id."""

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        hooks: list[tuple[str, Hook]] | None = None,
    ) -> None:
        # boto3 reads only AWS_DEFAULT_REGION; AWS_REGION (which the AWS CLI v2 and SDKs read
        # first) is honoured here so both work.
        region = region or os.environ.get("AWS_REGION") or None
        try:
            self.session = boto3.Session(profile_name=profile, region_name=region)
        except BotoCoreError as exc:  # e.g. ProfileNotFound
            raise UsageError(str(exc), "Check --profile / AWS_PROFILE and ~/.aws/config.") from None
        self.region = self.session.region_name or ""
        if not self.region:
            raise UsageError(
                "No AWS region is set.",
                "Set stack.region in the config, pass --region, or export AWS_REGION.",
            )
        self._config = retry_config(os.environ)
        self._hooks = [*REDACT_HOOKS, *GLOBAL_HOOKS, *(hooks or [])]
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._account_id = ""

    def client(self, service: str) -> Any:
        with self._lock:  # sessions are not thread-safe; clients are
            if service not in self._clients:
                made = self.session.client(service, config=self._config)  # type: ignore[call-overload]
                for event, hook in self._hooks:
                    made.meta.events.register(event, hook)
                self._clients[service] = made
            return self._clients[service]

    @property
    def ec2(self) -> EC2Client:
        return self.client("ec2")  # type: ignore[no-any-return]

    @property
    def s3(self) -> S3Client:
        return self.client("s3")  # type: ignore[no-any-return]

    @property
    def secrets(self) -> SecretsManagerClient:
        return self.client("secretsmanager")  # type: ignore[no-any-return]

    @property
    def rds(self) -> RDSClient:
        return self.client("rds")  # type: ignore[no-any-return]

    @property
    def iam(self) -> IAMClient:
        return self.client("iam")  # type: ignore[no-any-return]

    @property
    def logs(self) -> CloudWatchLogsClient:
        return self.client("logs")  # type: ignore[no-any-return]

    @property
    def ecs(self) -> ECSClient:
        return self.client("ecs")  # type: ignore[no-any-return]

    @property
    def elbv2(self) -> ElasticLoadBalancingv2Client:
        return self.client("elbv2")  # type: ignore[no-any-return]

    @property
    def ssm(self) -> SSMClient:
        return self.client("ssm")  # type: ignore[no-any-return]

    @property
    def sts(self) -> STSClient:
        return self.client("sts")  # type: ignore[no-any-return]

    @property
    def account_id(self) -> str:
        if not self._account_id:
            self._account_id = caller_account(self)
        return self._account_id


def caller_account(ctx: AwsContext) -> str:
    """The account id, or an error that says how to fix the credentials or endpoint."""
    try:
        return ctx.sts.get_caller_identity()["Account"]
    except NoCredentialsError:
        raise UsageError(
            "No AWS credentials were found.",
            "Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws sso login`.",
        ) from None
    except NoRegionError:
        raise UsageError("No AWS region is set.", "Pass --region or export AWS_REGION.") from None
    except ClientError as exc:
        raise wrap_client_error("identify the AWS account (sts:GetCallerIdentity)", exc) from None
    except BotoCoreError as exc:
        raise AwsError(
            f"Could not reach AWS: {exc}",
            "Check your network and AWS_ENDPOINT_URL (if set), then run again.",
        ) from None


def tag_list(tags: Mapping[str, str]) -> list[Any]:
    """{'k': 'v'} -> [{'Key': 'k', 'Value': 'v'}] (the shape most AWS APIs use)."""
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def ecs_tags(tags: Mapping[str, str]) -> list[Any]:
    """{'k': 'v'} -> [{'key': 'k', 'value': 'v'}] (ECS's shape)."""
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: Any, key: str = "Key", value: str = "Value") -> dict[str, str]:
    """The inverse of tag_list (any list of tag mappings, as the APIs return them);
    ECS spells them lowercase: pass key='key', value='value'."""
    return {str(t[key]): str(t[value]) for t in tags or []}
