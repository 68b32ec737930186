"""Faults against moto in-process, through real boto3 clients.

`up` made to fail at each of its mutating calls in turn (a botocore ClientError, AccessDenied
or InternalError) stops with an error naming what it was doing; an `up` without the fault
then completes with exactly one of every resource (counted by tag and by name), and a third
`up` changes nothing. The same for `down`: interrupted at each of its mutating calls, a
second `down` leaves only what `down` keeps on purpose. Ctrl-C during `up` or `down` through
the CLI exits 130 with a message that the same command continues, and it does; the stack lock
is not left behind. Throttling injected into every third HTTP request is ridden out by
botocore's retries.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.retries.standard
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError
from conftest import CLIENT_SECRET, ENV, READ_PREFIXES, REGION, Calls, make_config, step_context
from moto.core.botocore_stubber import BotocoreStubber
from typer.testing import CliRunner

from mlflow_ecs import aws as aws_module
from mlflow_ecs import engine, lock, render
from mlflow_ecs.aws import AwsContext, tag_dict
from mlflow_ecs.cli import app
from mlflow_ecs.config import OWNER_TAG, Config, Names
from mlflow_ecs.errors import AwsError

ACCOUNT = "123456789012"  # moto's account
STACK = "mlflow"

# What a fresh `up` (no lock: engine.up alone) and a `down` of a complete stack change, in
# mutating calls (not Describe/Get/List/Head). Pinned here so the parametrized cases below cover
# every call: test_the_fault_cases_cover_every_mutating_call fails when the real count drifts.
UP_MUTATING_CALLS = 44
DOWN_MUTATING_CALLS = 31

# What each mutating call's error must name, by operation: the resource it was working on.
DOING = {
    "CreateVpc": "VPC",
    "CreateSubnet": "subnet",
    "CreateSecurityGroup": "security group",
    "AuthorizeSecurityGroupIngress": "rules of",
    "CreateSecret": "secret",
    "CreateDBSubnetGroup": "DB subnet group",
    "CreateDBCluster": "database cluster",
    "CreateDBInstance": "database writer",
    "CreateInternetGateway": "internet gateway",
    "AttachInternetGateway": "internet gateway",
    "CreateRouteTable": "route table",
    "CreateRoute": "route table",
    "AssociateRouteTable": "route table",
    "CreateBucket": "bucket",
    "PutPublicAccessBlock": "bucket",
    "PutBucketEncryption": "bucket",
    "PutBucketVersioning": "bucket",
    "PutBucketTagging": "bucket",
    "PutBucketPolicy": "bucket",
    "CreateRole": "IAM role",
    "PutRolePolicy": "IAM role",
    "AttachRolePolicy": "IAM role",
    "CreateLogGroup": "log group",
    "PutRetentionPolicy": "log group",
    "CreateCluster": "ECS cluster",
    "CreateTargetGroup": "target group",
    "CreateLoadBalancer": "load balancer",
    "ModifyLoadBalancerAttributes": "load balancer",
    "CreateListener": "listeners",
    "RegisterTaskDefinition": "task definition",
    "CreateService": "ECS service",
    # down
    "DeleteService": "ECS service",
    "DeleteLoadBalancer": "load balancer",
    "DeleteTargetGroup": "target group",
    "DeregisterTaskDefinition": "task definition",
    "DeleteLogGroup": "log group",
    "DeleteRolePolicy": "IAM role",
    "DetachRolePolicy": "IAM role",
    "DeleteRole": "IAM role",
    "DeleteCluster": "ECS cluster",
    "DeleteSecret": "secret",
    "DeleteDBInstance": "database writer",
    "DeleteDBCluster": "database cluster",
    "DeleteDBSubnetGroup": "DB subnet group",
    "DeleteSecurityGroup": "security group",
    "DetachInternetGateway": "contents of the VPC",
    "DeleteInternetGateway": "contents of the VPC",
    "DisassociateRouteTable": "contents of the VPC",
    "DeleteSubnet": "contents of the VPC",
    "DeleteRouteTable": "contents of the VPC",
    "DeleteVpc": "VPC",
}


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """conftest's moto with only the AWS managed policy the stack attaches: moto builds all
    ~1,600 of them in every fresh account (~0.8 s), and this file makes about 90 accounts."""
    from moto import mock_aws
    from moto.iam import models as iam_models

    wanted = render.EXECUTION_POLICY_ARN.rsplit("/", 1)[1]
    only = {wanted: json.loads(iam_models.aws_managed_policies_data)[wanted]}
    monkeypatch.setattr(iam_models, "aws_managed_policies_data", json.dumps(only))
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        yield


# --- fault injection -------------------------------------------------------------------------


def mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES)


class FaultAt:
    """A before-call hook that fails the k-th mutating call with a ClientError, once.

    botocore's before-call handlers may answer for the request (client.py _make_api_call):
    the (http response, parsed dict) returned here is raised as the ClientError AWS would
    have sent, and nothing reaches moto. Calls run in threads: counting is locked.
    """

    def __init__(self, k: int, code: str) -> None:
        self.k, self.code = k, code
        self.seen = 0
        self.failed = ""  # 'service.Operation' of the call that was failed
        self._lock = threading.Lock()

    def hook(self, event_name: str, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        _, service, operation = event_name.split(".", 2)
        if not mutating(operation):
            return None
        with self._lock:
            self.seen += 1
            if self.seen != self.k:
                return None
            self.failed = f"{service}.{operation}"
        status = 403 if self.code == "AccessDenied" else 500
        message = {
            "AccessDenied": f"User: arn:aws:iam::{ACCOUNT}:user/ci is not authorized to "
            f"perform: {operation}",
            "InternalError": "We encountered an internal error. Please try again.",
        }[self.code]
        parsed = {
            "Error": {"Code": self.code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "fault"},
        }
        return AWSResponse("https://fault.invalid/", status, {}, None), parsed  # type: ignore[arg-type]


def code_for(k: int) -> str:
    return "AccessDenied" if k % 2 else "InternalError"


def faulty(fault: FaultAt) -> AwsContext:
    return AwsContext(REGION, hooks=[("before-call.*.*", fault.hook)])


def assert_names_what_it_was_doing(error: AwsError, fault: FaultAt) -> None:
    operation = fault.failed.split(".", 1)[1]
    assert error.message.startswith("Could not "), error.message
    assert f": {fault.code}: " in error.message, error.message
    assert DOING[operation] in error.message, (operation, error.message)
    assert error.hint


# --- what the account holds ------------------------------------------------------------------


@functools.cache
def client(service_name: str) -> Any:
    """A client outside the AwsContext: inspection is neither counted nor faulted. Made once
    (moto's handler is botocore's, so a client serves every test's fresh mock account)."""
    return boto3.client(service_name, region_name=REGION)


def names_of(cfg: Config) -> Names:
    return cfg.names(ACCOUNT, REGION)


def _label(name: str, tags: dict[str, str], extra: str = "") -> str:
    """The name, marked when the stack's tag is missing: counts by name and by tag at once."""
    untagged = "" if tags.get(OWNER_TAG) == STACK else " (untagged)"
    return f"{name}{extra}{untagged}"


def _ec2(ec2: Any) -> dict[str, list[str]]:
    """Everything of the EC2 kinds the tool makes; the account's defaults left out."""
    default_vpcs = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault")}

    def name(item: dict[str, Any], fallback: str) -> tuple[str, dict[str, str]]:
        tags = tag_dict(item.get("Tags"))
        return tags.get("Name", fallback), tags

    found: dict[str, list[str]] = {}
    for vpc in ec2.describe_vpcs()["Vpcs"]:
        if vpc["VpcId"] not in default_vpcs:
            found.setdefault("vpc", []).append(_label(*name(vpc, vpc["VpcId"])))
    for sub in ec2.describe_subnets()["Subnets"]:
        if sub["VpcId"] not in default_vpcs:
            found.setdefault("subnet", []).append(_label(*name(sub, sub["SubnetId"])))
    for igw in ec2.describe_internet_gateways()["InternetGateways"]:
        vpcs = {a["VpcId"] for a in igw.get("Attachments", [])}
        if vpcs & default_vpcs:
            continue
        where = " (attached)" if vpcs else " (detached)"
        found.setdefault("internet gateway", []).append(
            _label(*name(igw, igw["InternetGatewayId"]), where)
        )
    for table in ec2.describe_route_tables()["RouteTables"]:
        main = any(a.get("Main") for a in table.get("Associations", []))
        if table["VpcId"] not in default_vpcs and not main:
            found.setdefault("route table", []).append(_label(*name(table, table["RouteTableId"])))
    for group in ec2.describe_security_groups()["SecurityGroups"]:
        if group["VpcId"] not in default_vpcs and group["GroupName"] != "default":
            found.setdefault("security group", []).append(
                _label(group["GroupName"], tag_dict(group.get("Tags")))
            )
    return found


def _storage() -> dict[str, list[str]]:
    s3, sm, iam, logs, ssm = (
        client(s) for s in ("s3", "secretsmanager", "iam", "logs", "ssm")
    )  # fmt: skip
    found: dict[str, list[str]] = {}
    for bucket in s3.list_buckets()["Buckets"]:
        try:
            tags = tag_dict(s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"])
        except ClientError:
            tags = {}
        found.setdefault("bucket", []).append(_label(bucket["Name"], tags))
    for secret in sm.list_secrets(IncludePlannedDeletion=True)["SecretList"]:
        planned = " (scheduled for deletion)" if secret.get("DeletedDate") else ""
        found.setdefault("secret", []).append(
            _label(secret["Name"], tag_dict(secret.get("Tags")), planned)
        )
    for role in iam.list_roles()["Roles"]:
        tags = tag_dict(iam.list_role_tags(RoleName=role["RoleName"])["Tags"])
        found.setdefault("role", []).append(_label(role["RoleName"], tags))
    for group in logs.describe_log_groups()["logGroups"]:
        arn = group["arn"].removesuffix(":*")
        tags = logs.list_tags_for_resource(resourceArn=arn).get("tags", {})
        found.setdefault("log group", []).append(_label(group["logGroupName"], tags))
    for param in ssm.describe_parameters()["Parameters"]:
        found.setdefault("ssm parameter", []).append(param["Name"])
    return found


def _database(rds: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        tags = tag_dict(
            rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]
        )
        found.setdefault("db subnet group", []).append(_label(group["DBSubnetGroupName"], tags))
    for cluster in rds.describe_db_clusters()["DBClusters"]:
        found.setdefault("db cluster", []).append(
            _label(cluster["DBClusterIdentifier"], tag_dict(cluster.get("TagList")))
        )
    for instance in rds.describe_db_instances()["DBInstances"]:
        found.setdefault("db instance", []).append(
            _label(instance["DBInstanceIdentifier"], tag_dict(instance.get("TagList")))
        )
    # moto keeps AWS's automated snapshots after the cluster is gone (AWS deletes them with it).
    for snap in rds.describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"]:
        found.setdefault("db snapshot", []).append(
            _label(snap["DBClusterSnapshotIdentifier"], tag_dict(snap.get("TagList")))
        )
    return found


def _containers(ecs: Any, elbv2: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    arns = ecs.list_clusters()["clusterArns"]
    clusters = ecs.describe_clusters(clusters=arns, include=["TAGS"])["clusters"] if arns else []
    for cluster in (c for c in clusters if c["status"] == "ACTIVE"):
        tags = tag_dict(cluster.get("tags"), "key", "value")
        found.setdefault("ecs cluster", []).append(_label(cluster["clusterName"], tags))
        services = ecs.list_services(cluster=cluster["clusterArn"])["serviceArns"]
        described = (
            ecs.describe_services(
                cluster=cluster["clusterArn"], services=services, include=["TAGS"]
            )["services"]
            if services
            else []
        )
        for svc in (s for s in described if s["status"] == "ACTIVE"):
            tags = tag_dict(svc.get("tags"), "key", "value")
            found.setdefault("ecs service", []).append(_label(svc["serviceName"], tags))
    for arn in ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"]:
        got = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
        tags = tag_dict(got.get("tags"), "key", "value")
        found.setdefault("task definition", []).append(_label(arn.rsplit("/", 1)[1], tags))
    tags_of: dict[str, dict[str, str]] = {}
    lbs = elbv2.describe_load_balancers()["LoadBalancers"]
    tgs = elbv2.describe_target_groups()["TargetGroups"]
    arns = [lb["LoadBalancerArn"] for lb in lbs] + [tg["TargetGroupArn"] for tg in tgs]
    if arns:
        for desc in elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
            tags_of[desc["ResourceArn"]] = tag_dict(desc.get("Tags"))
    for lb in lbs:
        arn = lb["LoadBalancerArn"]
        found.setdefault("load balancer", []).append(_label(lb["LoadBalancerName"], tags_of[arn]))
        for listener in elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]:
            cert = " with certificate" if listener.get("Certificates") else ""
            found.setdefault("listener", []).append(
                f"{listener['Protocol']}:{listener['Port']}{cert}"
            )
    for tg in tgs:
        found.setdefault("target group", []).append(
            _label(tg["TargetGroupName"], tags_of[tg["TargetGroupArn"]])
        )
    return found


def census() -> dict[str, list[str]]:
    """kind -> sorted names of everything of the kinds the tool makes, in the whole (moto)
    account and region; an untagged one is marked '(untagged)'. Kinds with none are left out."""
    found = {
        **_ec2(client("ec2")),
        **_storage(),
        **_database(client("rds")),
        **_containers(client("ecs"), client("elbv2")),
    }
    return {kind: sorted(names) for kind, names in found.items() if names}


def complete_stack(cfg: Config) -> dict[str, list[str]]:
    """What the account holds after a complete `up`: one of every resource, each tagged."""
    n = names_of(cfg)
    return {
        "vpc": [n.vpc],
        "subnet": sorted(
            f"{STACK}-{role}" for role in ("public-a", "public-b", "private-a", "private-b")
        ),
        "internet gateway": [f"{STACK} (attached)"],
        "route table": [f"{STACK}-public"],
        "security group": sorted([n.sg_alb, n.sg_tasks, n.sg_db]),
        "bucket": [n.bucket],
        "secret": sorted(
            [n.secret_db_password, n.secret_client_id, n.secret_client_secret, n.secret_cookie]
        ),
        "role": sorted([n.execution_role, n.task_role]),
        "log group": [n.log_group],
        "db subnet group": [n.db_subnet_group],
        "db cluster": [n.db_cluster],
        "db instance": [n.db_instance],
        "ecs cluster": [n.ecs_cluster],
        "ecs service": [n.service],
        "task definition": [f"{n.task_family}:1"],
        "load balancer": [n.alb],
        "target group": [n.target_group],
        "listener": ["HTTP:80"],
    }


def assert_only_the_kept_data(cfg: Config) -> None:
    """After `down`: the bucket, one final snapshot, the secrets scheduled for deletion."""
    n = names_of(cfg)
    left = census()
    snapshots = left.pop("db snapshot", [])
    assert left == {
        "bucket": [n.bucket],
        "secret": sorted(
            f"{name} (scheduled for deletion)"
            for name in (
                n.secret_db_password,
                n.secret_client_id,
                n.secret_client_secret,
                n.secret_cookie,
            )
        ),
    }
    assert len(snapshots) == 1 and snapshots[0].startswith(n.snapshot_prefix), snapshots


def forget_automated_snapshots() -> None:
    """moto keeps `rds:<id>-…` automated snapshots after the cluster is deleted, and creating
    the same cluster id in the same minute then fails (see notes/moto.md); AWS deletes them."""
    rds = client("rds")
    for snap in rds.describe_db_cluster_snapshots(SnapshotType="automated")["DBClusterSnapshots"]:
        rds.delete_db_cluster_snapshot(
            DBClusterSnapshotIdentifier=snap["DBClusterSnapshotIdentifier"]
        )


# --- resume after any failure ----------------------------------------------------------------


def test_the_fault_cases_cover_every_mutating_call(aws: AwsContext, calls: Calls) -> None:
    cfg = make_config()
    engine.up(step_context(aws, cfg))
    up_calls = sum(calls.mutating().values())
    calls.clear()
    engine.down(step_context(aws, cfg))

    assert (up_calls, sum(calls.mutating().values())) == (UP_MUTATING_CALLS, DOWN_MUTATING_CALLS)
    assert {op.split(".", 1)[1] for op in calls.mutating()} <= set(DOING)


@pytest.mark.parametrize("k", range(1, UP_MUTATING_CALLS + 1))
def test_up_failing_at_any_mutating_call_resumes_to_exactly_one_of_everything(
    aws: AwsContext, calls: Calls, k: int
) -> None:
    cfg = make_config()
    fault = FaultAt(k, code_for(k))

    with pytest.raises(AwsError) as caught:
        engine.up(step_context(faulty(fault), cfg))

    assert fault.failed, f"up made fewer than {k} mutating calls"
    assert_names_what_it_was_doing(caught.value, fault)
    engine.up(step_context(aws, cfg))
    assert census() == complete_stack(cfg), f"after a fault at {fault.failed}"
    calls.clear()
    engine.up(step_context(aws, cfg))
    assert calls.mutating() == {}, f"after a fault at {fault.failed}"


@pytest.mark.parametrize("k", range(1, DOWN_MUTATING_CALLS + 1))
def test_down_failing_at_any_mutating_call_finishes_on_the_next_down(
    aws: AwsContext, k: int
) -> None:
    cfg = make_config()
    engine.up(step_context(aws, cfg))
    fault = FaultAt(k, code_for(k))

    with pytest.raises(AwsError) as caught:
        engine.down(step_context(faulty(fault), cfg))

    assert fault.failed, f"down made fewer than {k} mutating calls"
    assert_names_what_it_was_doing(caught.value, fault)
    engine.down(step_context(aws, cfg))
    assert_only_the_kept_data(cfg)


# --- Ctrl-C through the CLI ------------------------------------------------------------------

CONFIG = f"""
[stack]
name = "{STACK}"

[oauth2_proxy]
email_domains = ["example.com"]
"""


class InterruptAt:
    """A before-call hook that raises KeyboardInterrupt (Ctrl-C) at one operation, once."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.fired = False
        self._lock = threading.Lock()

    def hook(self, event_name: str, **_: Any) -> None:
        if event_name.split(".", 1)[1] != self.operation:
            return
        with self._lock:
            if self.fired:
                return
            self.fired = True
        raise KeyboardInterrupt


@pytest.fixture
def cli(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CliRunner, list[str]]]:
    """A runner and `--config FILE`, polling fast, with the OAuth client in the environment."""
    monkeypatch.setenv("MLFLOW_ECS_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("MLFLOW_ECS_WAIT_TIMEOUT", "30")
    monkeypatch.setenv("COLUMNS", "200")
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "mlflow-ecs.toml"
    path.write_text(CONFIG)
    yield CliRunner(), ["--config", str(path)]


def run_cli(runner: CliRunner, args: list[str], code: int) -> str:
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, f"exit {result.exit_code} != {code}:\n{result.output}"
    assert CLIENT_SECRET not in result.output
    return result.output


def interrupted(
    monkeypatch: pytest.MonkeyPatch, runner: CliRunner, args: list[str], operation: str
) -> str:
    """Run the CLI with Ctrl-C at `operation`: the hook reaches the CLI's own AwsContext through
    aws.GLOBAL_HOOKS (monkeypatch puts the list back afterwards)."""
    stop = InterruptAt(operation)
    with monkeypatch.context() as patch:
        patch.setattr(aws_module, "GLOBAL_HOOKS", [("before-call.*.*", stop.hook)])
        output = run_cli(runner, args, 130)
    assert stop.fired, f"the CLI never called {operation}"
    return output


def assert_continues_and_unlocked(output: str) -> None:
    assert "run the same command again to continue" in " ".join(output.split())
    with pytest.raises(ClientError, match="ParameterNotFound"):
        client("ssm").get_parameter(Name=lock.parameter_name(STACK))


@pytest.mark.parametrize(
    "operation",
    ["ssm.PutParameter", "rds.CreateDBCluster", "s3.PutBucketPolicy", "ecs.CreateService"],
)
def test_ctrl_c_during_up_says_run_again_and_the_next_up_completes(
    cli: tuple[CliRunner, list[str]], monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    runner, config = cli

    output = interrupted(monkeypatch, runner, ["up", *config], operation)

    assert_continues_and_unlocked(output)
    run_cli(runner, ["up", *config], 0)
    assert census() == complete_stack(make_config())


@pytest.mark.parametrize(
    "operation", ["ecs.DeleteService", "rds.DeleteDBCluster", "ec2.DeleteSubnet", "ec2.DeleteVpc"]
)
def test_ctrl_c_during_down_says_run_again_and_the_next_down_completes(
    cli: tuple[CliRunner, list[str]], monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    runner, config = cli
    run_cli(runner, ["up", *config], 0)

    output = interrupted(monkeypatch, runner, ["down", "--yes", *config], operation)

    assert_continues_and_unlocked(output)
    run_cli(runner, ["down", "--yes", *config], 0)
    assert_only_the_kept_data(make_config())


# --- throttling ------------------------------------------------------------------------------

# A throttling error per protocol, as each service sends it (botocore/parsers.py reads them).
QUERY_THROTTLE = (
    400,
    {"Content-Type": "text/xml"},
    b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>",
)
JSON_THROTTLE = (
    400,
    {"Content-Type": "application/x-amz-json-1.1"},
    b'{"__type":"ThrottlingException","message":"Rate exceeded"}',
)
THROTTLES = {
    "ec2": (
        503,
        {"Content-Type": "text/xml"},
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
        b"exceeded.</Message></Error></Errors><RequestID>1</RequestID></Response>",
    ),
    "s3": (
        503,
        {"Content-Type": "application/xml"},
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    ),
    "rds": QUERY_THROTTLE,
    "elastic-load-balancing-v2": QUERY_THROTTLE,
    "iam": QUERY_THROTTLE,
    "sts": QUERY_THROTTLE,
    "ecs": JSON_THROTTLE,
    "cloudwatch-logs": JSON_THROTTLE,
    "secrets-manager": JSON_THROTTLE,
    "ssm": JSON_THROTTLE,
}


class Body:
    """A raw HTTP body botocore can read: AWSResponse.content joins raw.stream()."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class Throttle:
    """A before-send hook that answers every `every`-th HTTP request with the service's
    throttling error, below botocore's retry handler: each answer is retried like AWS's own."""

    def __init__(self, every: int = 3) -> None:
        self.every = every
        self.requests = 0
        self.throttled: Counter[str] = Counter()
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def hook(self, event_name: str, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        with self._lock:
            self.requests += 1
            throttle = next(self._count) % self.every == 0
        service = event_name.split(".")[1]
        request.throttled = throttle  # type: ignore[attr-defined]
        if not throttle:
            return None
        self.throttled[service] += 1
        status, headers, body = THROTTLES[service]
        return AWSResponse(request.url, status, headers, Body(body))  # type: ignore[arg-type]


@pytest.fixture
def throttle(monkeypatch: pytest.MonkeyPatch) -> Throttle:
    """Every third HTTP request throttled; botocore's standard-mode backoff made instant.

    botocore calls every before-send handler, not only up to the first answer, so moto's own
    handler (after ours) would still carry out a throttled request: AWS does nothing on a
    throttle, so moto is told to skip the requests answered here. The backoff sleeps
    (`ExponentialBackoff.delay_amount`, up to 20 s each) return 0 to keep the test fast: what
    is tested is that the errors are retried, not how long botocore waits between tries.
    """
    moto_handler = BotocoreStubber.__call__

    def unless_throttled(
        self: BotocoreStubber, event_name: str, request: AWSPreparedRequest, **kwargs: Any
    ) -> Any:
        if getattr(request, "throttled", False):
            return None
        return moto_handler(self, event_name, request, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", unless_throttled)
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0
    )
    return Throttle(every=3)


def throttled_context(throttle: Throttle, calls: Calls) -> AwsContext:
    # "before-send.*" is more specific than moto's "before-send", so it runs first.
    return AwsContext(
        REGION, hooks=[("before-call.*.*", calls.hook), ("before-send.*", throttle.hook)]
    )


def test_up_and_down_complete_through_throttling_thanks_to_botocore_retries(
    moto: None, throttle: Throttle, calls: Calls
) -> None:
    cfg = make_config()

    engine.up(step_context(throttled_context(throttle, calls), cfg))

    assert census() == complete_stack(cfg)
    up_throttled = sum(throttle.throttled.values())
    assert up_throttled > 0
    # every throttled request was retried (and nothing else was): one more request each
    assert throttle.requests == calls.total() + up_throttled
    assert {"ec2", "s3", "rds", "iam", "ecs", "elastic-load-balancing-v2"} <= set(
        throttle.throttled
    )

    engine.down(step_context(throttled_context(throttle, calls), cfg))

    assert_only_the_kept_data(cfg)
    assert sum(throttle.throttled.values()) > up_throttled
    assert throttle.requests == calls.total() + sum(throttle.throttled.values())
