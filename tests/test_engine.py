"""The engine against moto, through real boto3 clients.

`up` creates every resource and `status` reports it; a re-run changes nothing; a changed
setting changes exactly that, in place; `down` removes what the stack made and nothing else,
keeps the data unless asked, and a later `up` brings the data back. The bounded waits are
tested with a fake clock, without AWS.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    ENV,
    REGION,
    Calls,
    Events,
    FakeTime,
    make_config,
    step_context,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mlflow_ecs import engine
from mlflow_ecs.aws import AwsContext, tag_dict
from mlflow_ecs.config import OWNER_TAG, Config, Names
from mlflow_ecs.errors import AwsError, ConfigError, NotOwnedError, UsageError, WaitTimeout
from mlflow_ecs.steps import database, service
from mlflow_ecs.steps.base import READY, WAITING, Poll, StepContext, wait_until

ACCOUNT = "123456789012"  # moto's account
DOMAIN = "mlflow.example.com"
NEW_IMAGE = "ghcr.io/mlflow/mlflow:v3.19.0-full"


# --- helpers ---------------------------------------------------------------------------------


def run_up(aws: AwsContext, cfg: Config) -> StepContext:
    sc = step_context(aws, cfg)
    engine.up(sc)
    return sc


def run_down(aws: AwsContext, cfg: Config, delete_data: bool = False) -> StepContext:
    sc = step_context(aws, cfg, delete_data=delete_data)
    engine.down(sc)
    return sc


def run_status(aws: AwsContext, cfg: Config) -> engine.StackStatus:
    return engine.status(step_context(aws, cfg))


def names_of(cfg: Config) -> Names:
    return cfg.names(ACCOUNT, REGION)


def ids(aws: AwsContext, cfg: Config) -> dict[tuple[str, str], str]:
    """(kind, name) -> AWS id of every resource `status` lists."""
    return {(r.kind, r.name): r.id for r in run_status(aws, cfg).resources}


def client(service_name: str) -> Any:
    """A client outside the AwsContext, so setup and inspection are not counted."""
    return boto3.client(service_name, region_name=REGION)


def forget_automated_snapshots() -> None:
    """moto keeps `rds:<id>-YYYY-MM-DD-HH-MM` automated snapshots after the cluster is deleted,
    and re-creating the same cluster id in the same minute then fails (see notes/moto.md).
    AWS deletes them with the cluster; so does this."""
    rds = client("rds")
    for snap in rds.describe_db_cluster_snapshots(SnapshotType="automated")["DBClusterSnapshots"]:
        rds.delete_db_cluster_snapshot(
            DBClusterSnapshotIdentifier=snap["DBClusterSnapshotIdentifier"]
        )


def past_the_policy(bucket: str, call: Callable[[Any], Any]) -> Any:
    """Run an object call with the bucket policy lifted for a moment: moto applies its TLS-only
    Deny to every object call (see notes/moto.md). The policy is put back unchanged."""
    s3 = client("s3")
    policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    s3.delete_bucket_policy(Bucket=bucket)
    try:
        return call(s3)
    finally:
        s3.put_bucket_policy(Bucket=bucket, Policy=policy)


def final_snapshots(cfg: Config) -> list[str]:
    got = client("rds").describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"]
    prefix = names_of(cfg).snapshot_prefix
    return [
        s["DBClusterSnapshotIdentifier"]
        for s in got
        if s["DBClusterSnapshotIdentifier"].startswith(prefix)
    ]


def secret_values(cfg: Config) -> dict[str, str]:
    sm = client("secretsmanager")
    n = names_of(cfg)
    names = [n.secret_db_password, n.secret_client_id, n.secret_client_secret, n.secret_cookie]
    return {name: sm.get_secret_value(SecretId=name)["SecretString"] for name in names}


def task_revisions(cfg: Config) -> list[str]:
    family = names_of(cfg).task_family
    got = client("ecs").list_task_definitions(familyPrefix=family, status="ACTIVE")
    return [arn.rsplit("/", 1)[1] for arn in got["taskDefinitionArns"]]


def the_service(cfg: Config) -> dict[str, Any]:
    n = names_of(cfg)
    got = client("ecs").describe_services(cluster=n.ecs_cluster, services=[n.service])
    return dict(got["services"][0])


def alb_sg_cidrs(aws: AwsContext, cfg: Config) -> set[str]:
    gid = ids(aws, cfg)[("security group", names_of(cfg).sg_alb)]
    group = client("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    return {r["CidrIp"] for perm in group["IpPermissions"] for r in perm.get("IpRanges", [])}


def record_params(aws: AwsContext, service_name: str, operation: str) -> list[dict[str, Any]]:
    """The parameters of every call of one operation through the AwsContext's client."""
    seen: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    aws.client(service_name).meta.events.register(
        f"provide-client-params.{service_name}.{operation}", hook
    )
    return seen


def inventory() -> dict[str, set[str]]:
    """Everything of the kinds the tool makes, in the whole (moto) account and region."""
    ec2, ecs, elbv2, rds = client("ec2"), client("ecs"), client("elbv2"), client("rds")
    cluster_arns = ecs.list_clusters()["clusterArns"]
    clusters = ecs.describe_clusters(clusters=cluster_arns)["clusters"] if cluster_arns else []
    active = [c["clusterArn"] for c in clusters if c["status"] == "ACTIVE"]
    services = {
        arn
        for c in active
        for arn in ecs.list_services(cluster=c)["serviceArns"]
        if ecs.describe_services(cluster=c, services=[arn])["services"][0]["status"] == "ACTIVE"
    }
    return {
        "vpcs": {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]},
        "subnets": {s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]},
        "security groups": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]},
        "internet gateways": {
            g["InternetGatewayId"] for g in ec2.describe_internet_gateways()["InternetGateways"]
        },
        "route tables": {t["RouteTableId"] for t in ec2.describe_route_tables()["RouteTables"]},
        "buckets": {b["Name"] for b in client("s3").list_buckets()["Buckets"]},
        "secrets": {
            s["Name"] + (" (scheduled for deletion)" if s.get("DeletedDate") else "")
            for s in client("secretsmanager").list_secrets(IncludePlannedDeletion=True)[
                "SecretList"
            ]
        },
        "db clusters": {c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]},
        "db instances": {
            i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]
        },
        "db subnet groups": {
            g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]
        },
        "db snapshots": {
            s["DBClusterSnapshotIdentifier"]
            for s in rds.describe_db_cluster_snapshots(SnapshotType="manual")["DBClusterSnapshots"]
        },
        "roles": {r["RoleName"] for r in client("iam").list_roles()["Roles"]},
        "log groups": {
            g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]
        },
        "ecs clusters": set(active),
        "ecs services": services,
        "task definitions": set(ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"]),
        "load balancers": {
            lb["LoadBalancerArn"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]
        },
        "target groups": {
            tg["TargetGroupArn"] for tg in elbv2.describe_target_groups()["TargetGroups"]
        },
    }


def stack_secrets(cfg: Config) -> set[str]:
    """The stack's secrets in the account, scheduled for deletion or not."""
    return {s for s in inventory()["secrets"] if s.startswith(f"{cfg.stack.name}/")}


def self_signed_certificate(domain: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def https_config(aws: AwsContext) -> Config:
    """A domain and an ACM certificate of the stack's region (self-signed, imported into moto)."""
    pem, key = self_signed_certificate(DOMAIN)
    arn = client("acm").import_certificate(Certificate=pem, PrivateKey=key)["CertificateArn"]
    return make_config({"load_balancer": {"domain": DOMAIN, "certificate_arn": arn}})


@pytest.fixture
def stack(aws: AwsContext, calls: Calls) -> Config:
    """The default stack, up; the call counter cleared."""
    cfg = make_config()
    run_up(aws, cfg)
    calls.clear()
    return cfg


@pytest.fixture
def user_vpc(aws: AwsContext) -> dict[str, Any]:
    """A VPC of the user's own, 2 public + 2 private subnets in two zones (not tagged by us)."""
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    subnets = {
        role: ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for role, cidr, zone in (
            ("public-a", "10.9.0.0/24", "a"),
            ("public-b", "10.9.1.0/24", "b"),
            ("private-a", "10.9.2.0/24", "a"),
            ("private-b", "10.9.3.0/24", "b"),
        )
    }
    return {
        "vpc_id": vpc,
        "public_subnet_ids": [subnets["public-a"], subnets["public-b"]],
        "private_subnet_ids": [subnets["private-a"], subnets["private-b"]],
    }


# --- up and status ---------------------------------------------------------------------------

EXPECTED_ROWS = [
    ("vpc", "mlflow"),
    ("security group", "mlflow-alb"),
    ("security group", "mlflow-tasks"),
    ("security group", "mlflow-db"),
    ("bucket", f"mlflow-artifacts-{ACCOUNT}-{REGION}"),
    ("secret", "mlflow/db-password"),
    ("secret", "mlflow/oauth2-client-id"),
    ("secret", "mlflow/oauth2-client-secret"),
    ("secret", "mlflow/oauth2-cookie-secret"),
    ("database cluster", "mlflow-db"),
    ("database writer", "mlflow-db-writer"),
    ("execution role", "mlflow-execution"),
    ("task role", "mlflow-task"),
    ("log group", "/mlflow-ecs/mlflow"),
    ("ecs cluster", "mlflow"),
    ("load balancer", "mlflow-alb"),
    ("target group", "mlflow-proxy"),
    ("task definition", "mlflow-mlflow"),
    ("service", "mlflow"),
]


def test_fresh_up_creates_every_resource_and_status_lists_each_with_its_id(
    aws: AwsContext, https_config: Config
) -> None:
    result = engine.up(step_context(aws, https_config))

    st = run_status(aws, https_config)
    assert [(r.kind, r.name) for r in st.resources] == EXPECTED_ROWS
    assert [r for r in st.resources if not r.present or not r.id] == []
    assert st.healthy and st.exists
    assert (st.running, st.desired) == (1, 1)
    assert st.url == result.url == f"https://{DOMAIN}"
    assert st.task_definition == result.task_definition
    assert st.task_definition.endswith("task-definition/mlflow-mlflow:1")
    rows = {(r.kind, r.name): r for r in st.resources}
    assert rows[("service", "mlflow")].state == "steady"
    assert rows[("database cluster", "mlflow-db")].state == "available"


def test_fresh_up_resources_exist_in_aws_as_status_says(
    aws: AwsContext, https_config: Config
) -> None:
    run_up(aws, https_config)
    found = ids(aws, https_config)
    n = names_of(https_config)

    ec2 = client("ec2")
    vpc_id = found[("vpc", n.vpc)]
    vpc = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
    assert tag_dict(vpc["Tags"])[OWNER_TAG] == "mlflow"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 4 and len({s["AvailabilityZone"] for s in subnets}) == 2
    igws = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    )
    assert len(igws["InternetGateways"]) == 1
    for role in (n.sg_alb, n.sg_tasks, n.sg_db):
        group = ec2.describe_security_groups(GroupIds=[found[("security group", role)]])[
            "SecurityGroups"
        ][0]
        assert (group["GroupName"], group["VpcId"]) == (role, vpc_id)

    assert client("s3").get_bucket_versioning(Bucket=n.bucket)["Status"] == "Enabled"
    cluster = client("rds").describe_db_clusters(DBClusterIdentifier=n.db_cluster)["DBClusters"][0]
    assert cluster["Endpoint"] == found[("database cluster", n.db_cluster)]
    assert (
        client("iam").get_role(RoleName=n.task_role)["Role"]["Arn"]
        == found[("task role", n.task_role)]
    )

    elbv2 = client("elbv2")
    alb = elbv2.describe_load_balancers(Names=[n.alb])["LoadBalancers"][0]
    assert alb["DNSName"] == found[("load balancer", n.alb)]
    listeners = elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    by_port = {li["Port"]: li for li in listeners}
    assert sorted(by_port) == [80, 443]
    assert by_port[80]["DefaultActions"][0]["Type"] == "redirect"
    cert = https_config.load_balancer.certificate_arn
    assert by_port[443]["Certificates"] == [{"CertificateArn": cert}]

    svc = the_service(https_config)
    assert svc["serviceArn"] == found[("service", n.service)]
    assert svc["taskDefinition"].endswith(found[("task definition", n.task_family)])


def test_status_url_is_the_alb_dns_name_without_a_domain(aws: AwsContext) -> None:
    cfg = make_config()
    result = engine.up(step_context(aws, cfg))

    dns = client("elbv2").describe_load_balancers(Names=["mlflow-alb"])["LoadBalancers"][0][
        "DNSName"
    ]
    assert result.url == run_status(aws, cfg).url == f"http://{dns}"
    assert any("HTTP only" in w for w in result.warnings)


def test_status_of_a_stack_that_does_not_exist_lists_everything_missing(aws: AwsContext) -> None:
    st = run_status(aws, make_config())

    assert [(r.kind, r.name) for r in st.resources] == EXPECTED_ROWS
    assert not any(r.present for r in st.resources)
    assert not st.exists and not st.healthy
    assert (st.url, st.running, st.desired) == ("", 0, 0)


def test_status_reports_a_failed_rollout_as_unhealthy(
    aws: AwsContext, stack: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find = service.find

    def failed_rollout(sc: StepContext) -> dict[str, Any] | None:
        svc = real_find(sc)
        assert svc is not None
        svc["deployments"] = [{**svc["deployments"][0], "rolloutState": "FAILED"}]
        return svc

    monkeypatch.setattr(service, "find", failed_rollout)
    st = run_status(aws, stack)

    assert next(r for r in st.resources if r.kind == "service").state == "failed"
    assert not st.healthy


# --- re-run: nothing changes -----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["http", "https"])
def test_second_up_with_the_same_config_makes_no_mutating_call(
    aws: AwsContext, calls: Calls, variant: str, request: pytest.FixtureRequest
) -> None:
    cfg = make_config() if variant == "http" else request.getfixturevalue("https_config")
    run_up(aws, cfg)
    before = ids(aws, cfg)
    calls.clear()

    run_up(aws, cfg)

    assert calls.mutating() == {}
    assert task_revisions(cfg) == ["mlflow-mlflow:1"]
    assert ids(aws, cfg) == before


# 35 calls, every one a read: each resource is read once, before any change (in parallel).
NO_CHANGE_UP_CALLS = {
    "secrets-manager.ListSecrets": 1,
    "secrets-manager.GetSecretValue": 2,
    "ec2.DescribeVpcs": 1,
    "ec2.DescribeSubnets": 1,
    "ec2.DescribeInternetGateways": 1,
    "ec2.DescribeRouteTables": 1,
    "ec2.DescribeSecurityGroups": 1,
    "s3.HeadBucket": 1,
    "s3.GetBucketTagging": 1,
    "s3.GetPublicAccessBlock": 1,
    "s3.GetBucketEncryption": 1,
    "s3.GetBucketVersioning": 1,
    "s3.GetBucketPolicy": 1,
    "rds.DescribeDBSubnetGroups": 1,
    "rds.ListTagsForResource": 1,
    "rds.DescribeDBClusters": 1,
    "rds.DescribeDBInstances": 1,
    "iam.GetRole": 2,
    "iam.GetRolePolicy": 2,
    "iam.ListAttachedRolePolicies": 2,
    "cloudwatch-logs.DescribeLogGroups": 1,
    "cloudwatch-logs.ListTagsForResource": 1,
    "ecs.DescribeClusters": 1,
    "elastic-load-balancing-v2.DescribeLoadBalancers": 1,
    "elastic-load-balancing-v2.DescribeTargetGroups": 1,
    "elastic-load-balancing-v2.DescribeTags": 2,  # load balancer + target group; listeners
    "elastic-load-balancing-v2.DescribeLoadBalancerAttributes": 1,
    "elastic-load-balancing-v2.DescribeListeners": 1,
    "ecs.DescribeServices": 1,
    "ecs.DescribeTaskDefinition": 1,
}

# status reads what `up` reads (the same reads serve the drift check and the rows), plus
# the target health; 36 calls, in parallel.
STATUS_CALLS = NO_CHANGE_UP_CALLS | {"elastic-load-balancing-v2.DescribeTargetHealth": 1}


def test_no_change_up_makes_exactly_these_calls(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    run_up(aws, stack)

    assert dict(calls.counts) == NO_CHANGE_UP_CALLS


def test_status_makes_exactly_these_calls(aws: AwsContext, calls: Calls, stack: Config) -> None:
    run_status(aws, stack)

    assert dict(calls.counts) == STATUS_CALLS


# --- a changed config updates in place -------------------------------------------------------


def test_new_image_registers_a_revision_and_updates_the_service_only(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    before = ids(aws, stack)
    calls.clear()

    run_up(aws, make_config({"mlflow": {"image": NEW_IMAGE}}))

    assert calls.mutating() == {"ecs.RegisterTaskDefinition": 1, "ecs.UpdateService": 1}
    assert task_revisions(stack) == ["mlflow-mlflow:1", "mlflow-mlflow:2"]
    assert the_service(stack)["taskDefinition"].endswith("mlflow-mlflow:2")
    after = ids(aws, stack)
    assert after.pop(("task definition", "mlflow-mlflow")) == "mlflow-mlflow:2"
    before.pop(("task definition", "mlflow-mlflow"))
    assert after == before


def test_new_desired_count_updates_the_service_only(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    before = ids(aws, stack)
    calls.clear()

    cfg = make_config({"service": {"desired_count": 2}})
    run_up(aws, cfg)

    assert calls.mutating() == {"ecs.UpdateService": 1}
    st = run_status(aws, cfg)
    assert (st.running, st.desired) == (2, 2)  # moto: update_service sets running = desired
    assert task_revisions(cfg) == ["mlflow-mlflow:1"]
    assert ids(aws, cfg) == before


def test_new_allowed_cidrs_replace_the_alb_rule_in_the_same_group(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    before = ids(aws, stack)
    assert alb_sg_cidrs(aws, stack) == {"0.0.0.0/0"}
    calls.clear()

    cfg = make_config({"network": {"allowed_cidrs": ["10.0.0.0/8"]}})
    run_up(aws, cfg)

    assert calls.mutating() == {
        "ec2.RevokeSecurityGroupIngress": 1,
        "ec2.AuthorizeSecurityGroupIngress": 1,
    }
    assert alb_sg_cidrs(aws, cfg) == {"10.0.0.0/8"}
    assert ids(aws, cfg) == before


def test_new_log_retention_sets_the_retention_only(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    before = ids(aws, stack)
    calls.clear()

    cfg = make_config({"service": {"log_retention_days": 90}})
    run_up(aws, cfg)

    assert calls.mutating() == {"cloudwatch-logs.PutRetentionPolicy": 1}
    group = client("logs").describe_log_groups(logGroupNamePrefix="/mlflow-ecs/mlflow")[
        "logGroups"
    ][0]
    assert group["retentionInDays"] == 90
    assert ids(aws, cfg) == before


# --- down ------------------------------------------------------------------------------------


def test_down_removes_everything_the_stack_made_and_keeps_the_data(aws: AwsContext) -> None:
    cfg = make_config()
    n = names_of(cfg)
    before = inventory()
    run_up(aws, cfg)
    past_the_policy(
        n.bucket,
        lambda s3: s3.put_object(Bucket=n.bucket, Key="mlflow/1/model.pkl", Body=b"weights"),
    )

    run_down(aws, cfg)

    left = inventory()
    kept = {
        "buckets": {n.bucket},
        "secrets": {
            f"{name} (scheduled for deletion)"
            for name in (
                n.secret_db_password,
                n.secret_client_id,
                n.secret_client_secret,
                n.secret_cookie,
            )
        },
        "db snapshots": set(final_snapshots(cfg)),
    }
    assert {k: v - before[k] for k, v in left.items() if v - before[k]} == kept
    assert {k: before[k] - v for k, v in left.items() if before[k] - v} == {}
    assert len(final_snapshots(cfg)) == 1
    assert final_snapshots(cfg)[0].startswith("mlflow-db-final-")
    got = past_the_policy(
        n.bucket, lambda s3: s3.get_object(Bucket=n.bucket, Key="mlflow/1/model.pkl")
    )
    assert got["Body"].read() == b"weights"


def test_down_leaves_a_second_stack_untouched(aws: AwsContext) -> None:
    ours, theirs = make_config(), make_config({"stack": {"name": "other"}})
    run_up(aws, theirs)
    theirs_before = run_status(aws, theirs).to_dict()
    inventory_before = inventory()
    run_up(aws, ours)

    run_down(aws, ours)

    assert run_status(aws, theirs).to_dict() == theirs_before
    assert theirs_before["healthy"] is True
    left = inventory()
    assert {k: inventory_before[k] - v for k, v in left.items() if inventory_before[k] - v} == {}


def test_down_never_deletes_the_users_own_vpc(
    aws: AwsContext, calls: Calls, user_vpc: dict[str, Any]
) -> None:
    cfg = make_config({"network": user_vpc})
    run_up(aws, cfg)
    st = run_status(aws, cfg)
    assert st.healthy
    assert next(r for r in st.resources if r.kind == "vpc").id == user_vpc["vpc_id"]
    calls.clear()
    run_up(aws, cfg)
    assert calls.mutating() == {}

    run_down(aws, cfg)

    ec2 = client("ec2")
    assert ec2.describe_vpcs(VpcIds=[user_vpc["vpc_id"]])["Vpcs"][0]["State"] == "available"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [user_vpc["vpc_id"]]}])[
        "Subnets"
    ]
    assert sorted(s["SubnetId"] for s in subnets) == sorted(
        user_vpc["public_subnet_ids"] + user_vpc["private_subnet_ids"]
    )
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [user_vpc["vpc_id"]]}]
    )
    assert [g["GroupName"] for g in groups["SecurityGroups"]] == ["default"]
    left = {r.kind for r in run_status(aws, cfg).resources if r.present}
    assert left == {"vpc", "bucket", "secret"}  # yours (referenced), and the kept data


def test_down_schedules_the_secrets_for_deletion(aws: AwsContext, stack: Config) -> None:
    run_down(aws, stack)

    rows = [r for r in run_status(aws, stack).resources if r.kind == "secret"]
    assert [r.state for r in rows] == ["scheduled for deletion"] * 4


def test_down_twice_succeeds_and_the_second_makes_no_mutating_call(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    run_down(aws, stack)
    calls.clear()

    sc = run_down(aws, stack)

    assert calls.mutating() == {}
    assert ("vpc", "deleted", "already gone") in sc.report.seen  # type: ignore[attr-defined]


def test_down_of_a_stack_that_never_existed_succeeds_without_a_change(
    aws: AwsContext, calls: Calls
) -> None:
    run_down(aws, make_config())

    assert calls.mutating() == {}


def test_up_after_down_restores_the_secrets_and_the_database_from_the_final_snapshot(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    values = secret_values(stack)
    run_down(aws, stack)
    (snapshot,) = final_snapshots(stack)
    forget_automated_snapshots()
    calls.clear()
    modified = record_params(aws, "rds", "ModifyDBCluster")

    run_up(aws, stack)

    assert secret_values(stack) == values
    assert calls.counts["secrets-manager.RestoreSecret"] == 4
    assert "secrets-manager.CreateSecret" not in calls.counts
    assert calls.counts["rds.RestoreDBClusterFromSnapshot"] == 1
    assert "rds.CreateDBCluster" not in calls.counts
    cluster = client("rds").describe_db_clusters(DBClusterIdentifier="mlflow-db")["DBClusters"][0]
    assert tag_dict(cluster["TagList"])[database.RESTORED_FROM_TAG] == snapshot
    assert [m["MasterUserPassword"] for m in modified] == [values["mlflow/db-password"]]
    assert run_status(aws, stack).healthy


def test_up_after_a_restore_changes_nothing(aws: AwsContext, calls: Calls, stack: Config) -> None:
    run_down(aws, stack)
    forget_automated_snapshots()
    run_up(aws, stack)
    calls.clear()

    run_up(aws, stack)

    assert calls.mutating() == {}


def test_down_with_delete_data_removes_bucket_versions_snapshot_and_secrets(
    aws: AwsContext, stack: Config
) -> None:
    n = names_of(stack)
    s3 = client("s3")

    def two_versions_and_a_delete_marker(s3: Any) -> None:
        s3.put_object(Bucket=n.bucket, Key="mlflow/a.txt", Body=b"one")
        s3.put_object(Bucket=n.bucket, Key="mlflow/a.txt", Body=b"two")
        s3.delete_object(Bucket=n.bucket, Key="mlflow/a.txt")

    past_the_policy(n.bucket, two_versions_and_a_delete_marker)
    versions = s3.list_object_versions(Bucket=n.bucket)
    assert (len(versions["Versions"]), len(versions["DeleteMarkers"])) == (2, 1)
    before = inventory()

    run_down(aws, stack, delete_data=True)

    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket=n.bucket)
    assert gone.value.response["Error"]["Code"] == "404"
    assert final_snapshots(stack) == []
    assert stack_secrets(stack) == set()
    assert n.bucket in before["buckets"] and n.bucket not in inventory()["buckets"]


def test_down_with_delete_data_after_a_plain_down_removes_what_was_kept(
    aws: AwsContext, stack: Config
) -> None:
    run_down(aws, stack)
    assert final_snapshots(stack) and len(stack_secrets(stack)) == 4

    run_down(aws, stack, delete_data=True)

    assert final_snapshots(stack) == []
    assert stack_secrets(stack) == set()
    assert names_of(stack).bucket not in inventory()["buckets"]


def test_down_refuses_a_database_with_deletion_protection_before_any_change(
    aws: AwsContext, calls: Calls
) -> None:
    cfg = make_config({"database": {"deletion_protection": True}})
    run_up(aws, cfg)
    calls.clear()

    with pytest.raises(UsageError, match="deletion protection"):
        run_down(aws, cfg)

    assert calls.mutating() == {}
    assert run_status(aws, cfg).healthy


# --- ownership -------------------------------------------------------------------------------


def foreign_bucket(n: Names) -> Callable[[], bool]:
    s3 = client("s3")
    s3.create_bucket(Bucket=n.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=n.bucket, Key="theirs.txt", Body=b"theirs")

    def untouched() -> bool:
        body = s3.get_object(Bucket=n.bucket, Key="theirs.txt")["Body"].read()
        no_policy = "Policy" not in _or_empty(lambda: s3.get_bucket_policy(Bucket=n.bucket))
        no_tags = not _or_empty(lambda: s3.get_bucket_tagging(Bucket=n.bucket)).get("TagSet")
        return body == b"theirs" and no_policy and no_tags

    return untouched


def foreign_role(n: Names) -> Callable[[], bool]:
    iam = client("iam")
    iam.create_role(
        RoleName=n.execution_role,
        AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}',
    )

    def untouched() -> bool:
        role = iam.get_role(RoleName=n.execution_role)["Role"]
        inline = iam.list_role_policies(RoleName=n.execution_role)["PolicyNames"]
        attached = iam.list_attached_role_policies(RoleName=n.execution_role)["AttachedPolicies"]
        return not role.get("Tags") and not inline and not attached

    return untouched


def foreign_secret(n: Names) -> Callable[[], bool]:
    sm = client("secretsmanager")
    sm.create_secret(Name=n.secret_client_id, SecretString="their value")

    def untouched() -> bool:
        meta = sm.describe_secret(SecretId=n.secret_client_id)
        value = sm.get_secret_value(SecretId=n.secret_client_id)["SecretString"]
        return value == "their value" and not meta.get("DeletedDate") and not meta.get("Tags")

    return untouched


def foreign_log_group(n: Names) -> Callable[[], bool]:
    logs = client("logs")
    logs.create_log_group(logGroupName=n.log_group)

    def untouched() -> bool:
        groups = logs.describe_log_groups(logGroupNamePrefix=n.log_group)["logGroups"]
        return [g["logGroupName"] for g in groups] == [
            n.log_group
        ] and "retentionInDays" not in groups[0]

    return untouched


def foreign_db_subnet_group(n: Names) -> Callable[[], bool]:
    ec2, rds = client("ec2"), client("rds")
    default = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ]
    theirs = sorted(s["SubnetId"] for s in default[:2])
    rds.create_db_subnet_group(
        DBSubnetGroupName=n.db_subnet_group, DBSubnetGroupDescription="theirs", SubnetIds=theirs
    )

    def untouched() -> bool:
        group = rds.describe_db_subnet_groups(DBSubnetGroupName=n.db_subnet_group)[
            "DBSubnetGroups"
        ][0]
        return sorted(s["SubnetIdentifier"] for s in group["Subnets"]) == theirs

    return untouched


def _or_empty(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ClientError:
        return {}


@pytest.mark.parametrize(
    ("kind", "make", "name_of"),
    [
        ("bucket", foreign_bucket, lambda n: n.bucket),
        ("IAM role", foreign_role, lambda n: n.execution_role),
        ("secret", foreign_secret, lambda n: n.secret_client_id),
        ("log group", foreign_log_group, lambda n: n.log_group),
        ("DB subnet group", foreign_db_subnet_group, lambda n: n.db_subnet_group),
    ],
)
def test_a_same_named_resource_without_our_tag_is_never_adopted_or_deleted(
    aws: AwsContext,
    kind: str,
    make: Callable[[Names], Callable[[], bool]],
    name_of: Callable[[Names], str],
) -> None:
    cfg = make_config()
    n = names_of(cfg)
    untouched = make(n)
    assert untouched()
    named = re.escape(f"{kind} {name_of(n)!r}")

    with pytest.raises(NotOwnedError, match=named):
        run_up(aws, cfg)
    assert untouched()

    with pytest.raises(NotOwnedError, match=named):
        run_down(aws, cfg)
    assert untouched()


def test_a_foreign_secret_stops_up_before_any_change(aws: AwsContext, calls: Calls) -> None:
    cfg = make_config()
    foreign_secret(names_of(cfg))

    with pytest.raises(NotOwnedError):
        run_up(aws, cfg)

    assert calls.mutating() == {}


# --- the OAuth client ------------------------------------------------------------------------


def test_first_up_without_the_oauth_client_is_a_config_error_before_any_change(
    aws: AwsContext, calls: Calls
) -> None:
    with pytest.raises(ConfigError) as caught:
        run_up(aws, make_config(env={}))

    assert calls.mutating() == {}
    assert [p.split(":", 1)[0] for p in caught.value.problems] == [
        "oauth2_proxy -> client_id",
        "OAUTH2_PROXY_CLIENT_SECRET",
    ]


def test_rerun_without_the_oauth_client_keeps_the_stored_values(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    run_up(aws, make_config(env={}))

    assert calls.mutating() == {}
    stored = secret_values(stack)
    assert (stored["mlflow/oauth2-client-id"], stored["mlflow/oauth2-client-secret"]) == (
        CLIENT_ID,
        CLIENT_SECRET,
    )


def test_a_new_oauth_secret_is_stored_and_redeploys_the_service(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    updates = record_params(aws, "ecs", "UpdateService")

    run_up(aws, make_config(env={**ENV, "OAUTH2_PROXY_CLIENT_SECRET": "GOCSPX-rotated"}))

    assert calls.mutating() == {"secrets-manager.PutSecretValue": 1, "ecs.UpdateService": 1}
    assert secret_values(stack)["mlflow/oauth2-client-secret"] == "GOCSPX-rotated"
    assert [u.get("forceNewDeployment") for u in updates] == [True]
    assert "taskDefinition" not in updates[0]
    assert task_revisions(stack) == ["mlflow-mlflow:1"]


# --- bounded waits, with a fake clock --------------------------------------------------------


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def offline(fake_time: FakeTime) -> StepContext:
    """A step context with no AWS behind it, polling every 5 s for at most 30 s of fake time."""
    cfg = make_config()
    poll = Poll(interval=5.0, timeout=30.0, sleep=fake_time.sleep, clock=fake_time.clock)
    return StepContext(aws=None, cfg=cfg, names=names_of(cfg), report=Events(), poll=poll)  # type: ignore[arg-type]


def states(*values: str) -> Callable[[], str]:
    """A probe that returns these states in turn, then the last one for ever."""
    seq: Iterator[str] = iter(values)
    last = [values[-1]]

    def probe() -> str:
        last[0] = next(seq, last[0])
        return last[0]

    return probe


def counter(prefix: str) -> Callable[[], str]:
    seen = [0]

    def probe() -> str:
        seen[0] += 1
        return f"{prefix} {seen[0]}"

    return probe


def test_wait_until_returns_the_first_done_state(offline: StepContext, fake_time: FakeTime) -> None:
    got = wait_until(
        offline, "thing", states("creating", "creating", "available"), lambda s: s == "available"
    )

    assert got == "available"
    assert fake_time.sleeps == [5.0, 5.0]
    assert offline.report.seen == [("thing", WAITING, "creating")]  # type: ignore[attr-defined]


def test_wait_until_times_out_with_the_last_state(
    offline: StepContext, fake_time: FakeTime
) -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait_until(offline, "thing", counter("creating"), lambda s: False)

    # probes at t = 0, 5, ..., 30: the seventh sees 30 s elapsed and gives up
    assert "Timed out after 30s waiting for thing; last state: creating 7" in caught.value.message
    assert sum(fake_time.sleeps) == 30.0


def test_wait_until_honours_a_shorter_timeout(offline: StepContext, fake_time: FakeTime) -> None:
    with pytest.raises(WaitTimeout, match="last state: creating 3"):
        wait_until(offline, "thing", counter("creating"), lambda s: False, timeout=10.0)

    assert fake_time.now == 10.0


def test_wait_until_raises_at_once_on_a_failed_state(
    offline: StepContext, fake_time: FakeTime
) -> None:
    with pytest.raises(AwsError, match="thing failed: status failed") as caught:
        wait_until(
            offline,
            "thing",
            states("failed"),
            lambda s: s == "available",
            failed=lambda s: f"status {s}" if s == "failed" else None,
        )

    assert not isinstance(caught.value, WaitTimeout)
    assert fake_time.sleeps == []


def test_wait_until_stops_when_another_step_failed(
    offline: StepContext, fake_time: FakeTime
) -> None:
    offline.cancel.set()

    with pytest.raises(AwsError, match="Stopped waiting for thing"):
        wait_until(offline, "thing", states("creating"), lambda s: False)

    assert fake_time.sleeps == []


TD = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mlflow-mlflow:2"
OLD_TD = "arn:aws:ecs:eu-west-1:123456789012:task-definition/mlflow-mlflow:1"


def svc(
    rollout: str = "COMPLETED", running: int = 1, desired: int = 1, td: str = TD, **extra: Any
) -> dict[str, Any]:
    primary = {
        "status": "PRIMARY",
        "rolloutState": rollout,
        "rolloutStateReason": f"rollout {rollout.lower()}",
    }
    return {
        "status": "ACTIVE",
        "taskDefinition": td,
        "runningCount": running,
        "desiredCount": desired,
        "deployments": [primary, *extra.pop("others", [])],
        **extra,
    }


@pytest.mark.parametrize(
    ("description", "steady"),
    [
        (svc(), True),
        (svc(rollout="IN_PROGRESS"), False),
        (svc(rollout="FAILED"), False),
        (svc(running=0), False),
        (svc(others=[{"status": "ACTIVE", "rolloutState": "COMPLETED"}]), False),
        ({"runningCount": 1, "desiredCount": 1, "deployments": [{"status": "PRIMARY"}]}, True),
    ],
    ids=[
        "completed",
        "in-progress",
        "failed",
        "not-all-running",
        "two-deployments",
        "no-rollout-state",
    ],
)
def test_is_steady(description: dict[str, Any], steady: bool) -> None:
    assert service.is_steady(description) is steady


def test_rollout_failure_reports_a_failed_deployment_with_its_events(offline: StepContext) -> None:
    offline.out.task_definition_arn = TD
    failed = svc(rollout="FAILED", events=[{"message": "task stopped: Essential container exited"}])

    reason = service.rollout_failure(offline, failed)

    assert reason is not None
    assert "failed and was rolled back (rollout failed)" in reason
    assert "Essential container exited" in reason


def test_rollout_failure_reports_a_service_on_another_revision(offline: StepContext) -> None:
    offline.out.task_definition_arn = TD

    reason = service.rollout_failure(offline, svc(td=OLD_TD))

    assert reason == f"the service runs {OLD_TD}, not {TD} (rolled back?)"


def test_rollout_failure_is_none_for_a_good_rollout(offline: StepContext) -> None:
    offline.out.task_definition_arn = TD

    assert service.rollout_failure(offline, svc()) is None
    assert service.rollout_failure(offline, svc(rollout="IN_PROGRESS")) is None


def fake_service(monkeypatch: pytest.MonkeyPatch, *descriptions: dict[str, Any]) -> None:
    """service.find returns these descriptions in turn, then the last one for ever."""
    seq = iter(descriptions)
    last = [descriptions[-1]]

    def find(sc: StepContext) -> dict[str, Any]:
        last[0] = next(seq, last[0])
        return last[0]

    monkeypatch.setattr(service, "find", find)


def test_service_wait_returns_once_the_rollout_completes(
    offline: StepContext, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline.out.task_definition_arn = TD
    fake_service(monkeypatch, svc(rollout="IN_PROGRESS", running=0), svc())

    service.wait(offline)

    assert fake_time.sleeps == [5.0]
    assert offline.report.seen[-1] == ("service", READY, "1/1 running, rollout COMPLETED")  # type: ignore[attr-defined]


def test_service_wait_reports_a_failed_rollout_as_an_error(
    offline: StepContext, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline.out.task_definition_arn = TD
    fake_service(
        monkeypatch, svc(rollout="IN_PROGRESS", running=0), svc(rollout="FAILED", running=0)
    )

    with pytest.raises(
        AwsError, match="service failed: the deployment failed and was rolled back"
    ) as caught:
        service.wait(offline)

    assert not isinstance(caught.value, WaitTimeout)
    assert fake_time.sleeps == [5.0]


def test_service_wait_times_out_on_a_rollout_that_never_finishes(
    offline: StepContext, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline.out.task_definition_arn = TD
    fake_service(monkeypatch, svc(rollout="IN_PROGRESS", running=0))

    with pytest.raises(WaitTimeout, match=r"last state: 0/1 running, rollout IN_PROGRESS"):
        service.wait(offline)

    assert fake_time.now == 30.0


# --- an up after a down that stopped while the service was draining --------------------------


def test_up_waits_for_a_draining_service_to_go_then_creates_it_anew(
    aws: AwsContext, calls: Calls
) -> None:
    cfg = make_config()
    engine.up(step_context(aws, cfg))
    aws.ecs.delete_service(cluster="mlflow", service="mlflow", force=True)  # moto: INACTIVE at once
    # AWS shows a deleted service as DRAINING until its tasks have stopped: the next three
    # descriptions say so (a draining service can be neither updated nor re-created).
    draining = {"left": 3}

    def still_draining(parsed: dict[str, Any], **_: Any) -> None:
        services = [s for s in parsed.get("services", []) if s.get("status") == "INACTIVE"]
        if services and draining["left"] > 0:
            draining["left"] -= 1
            for svc in services:
                svc["status"] = "DRAINING"

    aws.ecs.meta.events.register("after-call.ecs.DescribeServices", still_draining)
    calls.clear()
    events = Events()
    sc = engine.context(cfg, aws, events, Poll(interval=0.01, timeout=5.0))

    engine.up(sc)

    assert draining["left"] == 0  # it waited through every draining description
    assert calls.mutating() == {"ecs.CreateService": 1}  # no UpdateService on a draining one
    assert "waiting" in events.states("service")
    st = engine.status(step_context(aws, cfg))
    assert st.healthy and (st.running, st.desired) == (1, 1)
