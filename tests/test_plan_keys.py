"""Every config key `up` honours: change it, `plan` names it, `up` applies it in place, a second
`plan` is clean.

One table row per key (test_a_changed_key_is_planned_applied_in_place_and_then_clean): a stack
is made with a base config; the changed config's plan must name the key's effect, as (resource
kind, attribute) pairs among the changed resources; `up` with it must make exactly the expected
kinds of mutating AWS calls (so: in place, and nothing else); the next plan must be clean; and
where it is cheap, AWS is asked whether the change is really there.

Then what `up` does not apply in place: a new network.cidr (of a VPC the stack made), a new
database.name or database.username are planned as blocked replacements, and `up` refuses them
with a usage error (exit code 2) before any mutating call; load_balancer.internal is planned as
a replacement that `up` makes; an older database.engine_version is no change (AWS never
downgrades); another stack.name is another stack: everything is new, the first one untouched.
The user-VPC keys (vpc_id and the subnet ids) have their own rows, on a VPC made here.

Two things are emulated, as AWS behaves and moto does not (each said where it is done): ECS
reporting a service's health check grace period, and RDS keeping a DB subnet group it modified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from conftest import ENV, REGION, Calls, make_config, step_context

from mlflow_ecs import engine, render
from mlflow_ecs.aws import AwsContext, tag_dict
from mlflow_ecs.changes import CREATE, DELETE, NOOP, REPLACE, UPDATE, Plan
from mlflow_ecs.config import OWNER_TAG, Config, Names
from mlflow_ecs.errors import UsageError

ACCOUNT = "123456789012"  # moto's account


NEW_MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.19.0-full"
NEW_PROXY_IMAGE = "quay.io/oauth2-proxy/oauth2-proxy:v7.13.0"
NEW_ENGINE = "8.0.mysql_aurora.3.09.0"
OLDER_ENGINE = "8.0.mysql_aurora.3.05.2"
NEW_BUCKET = "my-own-mlflow-artifacts"
DOMAIN = "mlflow.example.com"
ISSUER = "https://accounts.google.com=32555940559.apps.googleusercontent.com"
CERT = "<certificate arn>"  # replaced by a certificate made in moto, in the stack's region

ELB = "elastic-load-balancing-v2"
REGISTER, UPDATE_SERVICE = "ecs.RegisterTaskDefinition", "ecs.UpdateService"
NEW_REVISION = frozenset({REGISTER, UPDATE_SERVICE})
REVISION_USED = ("service", "task definition")


def client(service_name: str) -> Any:
    """A client outside the AwsContext: what it does here is neither counted nor hooked."""
    return boto3.client(service_name, region_name=REGION)  # type: ignore[call-overload]


def names_of(cfg: Config) -> Names:
    return cfg.names(ACCOUNT, REGION)


def with_certificate(doc: Any, arn: str) -> Any:
    """The document with every CERT placeholder replaced by ``arn``."""
    if isinstance(doc, dict):
        return {k: with_certificate(v, arn) for k, v in doc.items()}
    if isinstance(doc, list):
        return [with_certificate(v, arn) for v in doc]
    return arn if doc == CERT else doc


def new_certificate() -> str:
    acm = client("acm")
    return str(acm.request_certificate(DomainName=DOMAIN)["CertificateArn"])


def pairs(found: Plan) -> set[tuple[str, str]]:
    """(kind, attribute) of every diff of every changed resource."""
    return {(c.kind, d.attribute) for c in found.changes if c.changed for d in c.diffs}


def actions(found: Plan) -> dict[tuple[str, str], str]:
    return {(c.kind, c.name): c.action for c in found.changes}


# --- what AWS holds (read outside the counted context) ---------------------------------------


def the_service(cfg: Config) -> dict[str, Any]:
    n = names_of(cfg)
    got = client("ecs").describe_services(cluster=n.ecs_cluster, services=[n.service])
    return dict(got["services"][0])


def running_task_definition(cfg: Config) -> dict[str, Any]:
    """The task definition the service runs."""
    arn = the_service(cfg)["taskDefinition"]
    return dict(client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"])


def container(cfg: Config, name: str) -> dict[str, Any]:
    td = running_task_definition(cfg)
    return dict(next(c for c in td["containerDefinitions"] if c["name"] == name))


def mlflow_command(cfg: Config) -> str:
    return str(container(cfg, render.MLFLOW)["command"][0])


def proxy_command(cfg: Config) -> list[str]:
    return list(container(cfg, render.PROXY)["command"])


def mlflow_env(cfg: Config) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(cfg, render.MLFLOW)["environment"]}


def db_cluster(cfg: Config) -> dict[str, Any]:
    got = client("rds").describe_db_clusters(DBClusterIdentifier=names_of(cfg).db_cluster)
    return dict(got["DBClusters"][0])


def security_group(cfg: Config, name: str) -> dict[str, Any]:
    """The stack's group of this name (in the VPC its tasks run in)."""
    ec2 = client("ec2")
    subnet = the_service(cfg)["networkConfiguration"]["awsvpcConfiguration"]["subnets"][0]
    vpc_id = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    got = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [name]},
        ]
    )["SecurityGroups"]
    return dict(got[0])


def group_rules(cfg: Config, name: str) -> set[render.Rule]:
    return render.rules_of(security_group(cfg, name)["IpPermissions"])


def the_load_balancer(cfg: Config) -> dict[str, Any]:
    got = client("elbv2").describe_load_balancers(Names=[names_of(cfg).alb])
    return dict(got["LoadBalancers"][0])


def lb_attributes(cfg: Config) -> dict[str, str]:
    arn = the_load_balancer(cfg)["LoadBalancerArn"]
    got = client("elbv2").describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
    return {a["Key"]: a["Value"] for a in got}


def listeners(cfg: Config) -> dict[int, dict[str, Any]]:
    arn = the_load_balancer(cfg)["LoadBalancerArn"]
    got = client("elbv2").describe_listeners(LoadBalancerArn=arn)["Listeners"]
    return {int(lst["Port"]): dict(lst) for lst in got}


def target_group_arn(cfg: Config) -> str:
    got = client("elbv2").describe_target_groups(Names=[names_of(cfg).target_group])
    return str(got["TargetGroups"][0]["TargetGroupArn"])


def secret_value(name: str) -> str:
    return str(client("secretsmanager").get_secret_value(SecretId=name)["SecretString"])


def task_policy(cfg: Config) -> dict[str, Any]:
    got = client("iam").get_role_policy(RoleName=names_of(cfg).task_role, PolicyName="mlflow-ecs")
    return dict(got["PolicyDocument"])


def subnets_by_role(cfg: Config) -> dict[str, str]:
    """The stack's subnets (of the VPC it made): role -> id."""
    ec2 = client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [cfg.stack.name]}])
    vpc_id = vpc["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    return {tag_dict(s.get("Tags"))["mlflow-ecs:role"]: s["SubnetId"] for s in subnets}


# --- checks in AWS, one per row where cheap --------------------------------------------------


def check_tags(cfg: Config) -> None:
    want = {"team": "b", "env": "dev", OWNER_TAG: cfg.stack.name}
    n = names_of(cfg)
    vpc = client("ec2").describe_vpcs(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [cfg.stack.name]}]
    )["Vpcs"][0]
    assert {k: v for k, v in tag_dict(vpc["Tags"]).items() if k != "Name"} == want
    bucket = client("s3").get_bucket_tagging(Bucket=n.bucket)["TagSet"]
    assert tag_dict(bucket) == want
    assert tag_dict(db_cluster(cfg)["TagList"]) == want
    svc_arn = the_service(cfg)["serviceArn"]
    svc_tags = client("ecs").list_tags_for_resource(resourceArn=svc_arn)["tags"]
    assert tag_dict(svc_tags, "key", "value") == want


def check_allowed_cidrs(cfg: Config) -> None:
    rules = group_rules(cfg, names_of(cfg).sg_alb)
    assert rules == {("tcp", 80, 80, "10.0.0.0/8"), ("tcp", 80, 80, "192.168.0.0/16")}


def check_private_tasks(cfg: Config) -> None:
    net = the_service(cfg)["networkConfiguration"]["awsvpcConfiguration"]
    roles = subnets_by_role(cfg)
    assert sorted(net["subnets"]) == sorted([roles["private-a"], roles["private-b"]])
    assert net["assignPublicIp"] == "DISABLED"


def check_new_bucket(cfg: Config) -> None:
    s3 = client("s3")
    assert tag_dict(s3.get_bucket_tagging(Bucket=NEW_BUCKET)["TagSet"]) == {OWNER_TAG: "mlflow"}
    assert s3.get_bucket_versioning(Bucket=NEW_BUCKET)["Status"] == "Enabled"
    old = names_of(make_config()).bucket
    assert old in {b["Name"] for b in s3.list_buckets()["Buckets"]}  # kept: it holds data
    assert f"--default-artifact-root s3://{NEW_BUCKET}/mlflow" in mlflow_command(cfg)
    objects = task_policy(cfg)["Statement"][1]["Resource"]
    assert objects == f"arn:aws:s3:::{NEW_BUCKET}/mlflow/*"


def check_path(cfg: Config) -> None:
    bucket = names_of(cfg).bucket
    assert f"--default-artifact-root s3://{bucket}/runs/team" in mlflow_command(cfg)
    assert task_policy(cfg)["Statement"][1]["Resource"] == f"arn:aws:s3:::{bucket}/runs/team/*"


def check_proxied(cfg: Config) -> None:
    assert lb_attributes(cfg)["idle_timeout.timeout_seconds"] == "900"
    assert "--serve-artifacts" in mlflow_command(cfg)
    assert "--upstream-timeout=900s" in proxy_command(cfg)


def check_cluster(**want: Any) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        cluster = db_cluster(cfg)
        for key, value in want.items():
            if key in ("MinCapacity", "MaxCapacity"):
                assert cluster["ServerlessV2ScalingConfiguration"][key] == value
            else:
                assert cluster[key] == value

    return check


def check_null_pool(cfg: Config) -> None:
    check_cluster(MinCapacity=0.0)(cfg)
    assert mlflow_env(cfg)["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] == "NullPool"


def check_container(name: str, **want: Any) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        got = container(cfg, name)
        for key, value in want.items():
            assert got[key] == value

    return check


def check_size(cpu: str, memory: str) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        td = running_task_definition(cfg)
        assert (td["cpu"], td["memory"]) == (cpu, memory)

    return check


def check_mlflow_command(part: str) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        assert part in mlflow_command(cfg)

    return check


def check_proxy_flag(flag: str) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        assert flag in proxy_command(cfg)

    return check


def check_mlflow_port(cfg: Config) -> None:
    assert "--port 5001" in mlflow_command(cfg)
    assert "--upstream=http://127.0.0.1:5001/" in proxy_command(cfg)


def check_proxy_port(cfg: Config) -> None:
    n = names_of(cfg)
    assert "--http-address=0.0.0.0:4181" in proxy_command(cfg)
    [lb] = the_service(cfg)["loadBalancers"]
    assert (lb["containerPort"], lb["targetGroupArn"]) == (4181, target_group_arn(cfg))
    alb_group = security_group(cfg, n.sg_alb)["GroupId"]
    assert group_rules(cfg, n.sg_tasks) == {("tcp", 4181, 4181, alb_group)}


def check_secret(name: str, value: str) -> Callable[[Config], None]:
    def check(cfg: Config) -> None:
        assert secret_value(name) == value

    return check


def check_https(cfg: Config) -> None:
    got = listeners(cfg)
    assert sorted(got) == [80, 443]
    assert got[80]["DefaultActions"][0]["Type"] == "redirect"
    assert got[443]["Certificates"][0]["CertificateArn"] == cfg.load_balancer.certificate_arn
    assert {r[1] for r in group_rules(cfg, names_of(cfg).sg_alb)} == {80, 443}
    assert "--cookie-secure=true" in proxy_command(cfg)


def check_http_only(cfg: Config) -> None:
    got = listeners(cfg)
    assert sorted(got) == [80]
    assert got[80]["DefaultActions"][0]["Type"] == "forward"
    assert {r[1] for r in group_rules(cfg, names_of(cfg).sg_alb)} == {80}
    assert "--cookie-secure=false" in proxy_command(cfg)


def check_domain(cfg: Config) -> None:
    assert f"--redirect-url=https://{DOMAIN}/oauth2/callback" in proxy_command(cfg)
    assert mlflow_env(cfg)["MLFLOW_SERVER_ALLOWED_HOSTS"].startswith(f"{DOMAIN},")


def check_idle_timeout(cfg: Config) -> None:
    assert lb_attributes(cfg)["idle_timeout.timeout_seconds"] == "120"


def check_desired_count(cfg: Config) -> None:
    assert the_service(cfg)["desiredCount"] == 2


def check_retention(cfg: Config) -> None:
    group = client("logs").describe_log_groups(logGroupNamePrefix=names_of(cfg).log_group)
    assert group["logGroups"][0]["retentionInDays"] == 90


# --- the table -------------------------------------------------------------------------------

TAGGED_KINDS = (
    "vpc",
    "subnet",
    "internet gateway",
    "route table",
    "security group",
    "bucket",
    "secret",
    "db subnet group",
    "database cluster",
    "database writer",
    "execution role",
    "task role",
    "log group",
    "ecs cluster",
    "target group",
    "load balancer",
    "listener",
    "task definition",
    "service",
)
# Of those kinds, how many resources a stack has: 4 subnets, 3 groups, 4 secrets, 1 of the rest.
TAGGED_RESOURCES = len(TAGGED_KINDS) - 3 + 4 + 3 + 4


def check_every_resource_tagged(found: Plan) -> None:
    """Every taggable resource gets all three tag diffs (set, changed, removed), right ones."""
    for tag, old, new in (("env", None, "dev"), ("team", "a", "b"), ("old", "x", None)):
        named = [c for c in found.changes if (d := c.get(f"tag {tag}")) is not None]
        assert len(named) == TAGGED_RESOURCES, tag
        assert all((d.old, d.new) == (old, new) for c in named if (d := c.get(f"tag {tag}")))


@dataclass(frozen=True)
class Case:
    new: dict[str, Any]
    names: frozenset[tuple[str, str]]  # (kind, attribute) pairs the plan names
    calls: frozenset[str]  # the kinds of mutating calls `up` makes, exactly
    base: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] | None = None
    actions: tuple[tuple[str, str, str], ...] = ()  # (kind, name, action) in the plan
    check: Callable[[Config], None] | None = None  # in AWS, after `up`
    plan_check: Callable[[Plan], None] | None = None


def row(
    key: str,
    new: dict[str, Any],
    names: set[tuple[str, str]],
    calls: set[str] | frozenset[str],
    **more: Any,
) -> Any:
    return pytest.param(Case(new, frozenset(names), frozenset(calls), **more), id=key)


def taskdef(*attributes: str) -> set[tuple[str, str]]:
    """A new task definition revision, with these attributes, that the service then runs."""
    return {("task definition", a) for a in attributes} | {REVISION_USED}


def tags(values: dict[str, str]) -> dict[str, Any]:
    return {"stack": {"name": "mlflow", "tags": values}}


CID, CSECRET = "mlflow/oauth2-client-id", "mlflow/oauth2-client-secret"
SECRET_CHANGED = {("secret", "value"), ("service", "redeploy")}
HTTPS = {"load_balancer": {"certificate_arn": CERT}}
CORS = "mlflow.environment MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"

ROWS = [
    row(
        "stack.tags",
        tags({"team": "b", "env": "dev"}),
        {(k, f"tag {t}") for k in TAGGED_KINDS for t in ("team", "env", "old")},
        {
            "ec2.CreateTags",
            "ec2.DeleteTags",
            "s3.PutBucketTagging",
            "secrets-manager.TagResource",
            "secrets-manager.UntagResource",
            "rds.AddTagsToResource",
            "rds.RemoveTagsFromResource",
            "iam.TagRole",
            "iam.UntagRole",
            "cloudwatch-logs.TagResource",
            "cloudwatch-logs.UntagResource",
            "ecs.TagResource",
            "ecs.UntagResource",
            f"{ELB}.AddTags",
            f"{ELB}.RemoveTags",  # and no new revision: the task definition is tagged in place
        },
        base=tags({"team": "a", "old": "x"}),
        check=check_tags,
        plan_check=check_every_resource_tagged,
    ),
    row(
        "network.allowed_cidrs",
        {"network": {"allowed_cidrs": ["10.0.0.0/8", "192.168.0.0/16"]}},
        {("security group", "ingress")},
        {"ec2.RevokeSecurityGroupIngress", "ec2.AuthorizeSecurityGroupIngress"},
        actions=(("security group", "mlflow-alb", UPDATE),),
        check=check_allowed_cidrs,
    ),
    row(
        "network.task_subnets",
        {"network": {"task_subnets": "private"}},
        {("service", "network")},
        {UPDATE_SERVICE},
        check=check_private_tasks,
    ),
    row(
        "artifacts.bucket",
        {"artifacts": {"bucket": NEW_BUCKET}},
        {("task role", "policy mlflow-ecs"), *taskdef("mlflow.command")},
        {
            "s3.CreateBucket",
            "s3.PutBucketTagging",
            "s3.PutPublicAccessBlock",
            "s3.PutBucketEncryption",
            "s3.PutBucketVersioning",
            "s3.PutBucketPolicy",
            "iam.PutRolePolicy",
            *NEW_REVISION,
        },
        actions=(("bucket", NEW_BUCKET, CREATE), ("task role", "mlflow-task", UPDATE)),
        check=check_new_bucket,
    ),
    row(
        "artifacts.path",
        {"artifacts": {"path": "runs/team"}},
        {("task role", "policy mlflow-ecs"), *taskdef("mlflow.command")},
        {"iam.PutRolePolicy", *NEW_REVISION},
        check=check_path,
    ),
    row(
        "artifacts.mode",
        {"artifacts": {"mode": "proxied"}},
        {
            ("load balancer", "idle_timeout.timeout_seconds"),
            *taskdef("mlflow.command", "oauth2-proxy.command"),
        },
        {f"{ELB}.ModifyLoadBalancerAttributes", *NEW_REVISION},
        check=check_proxied,
    ),
    row(
        "database.engine_version",
        {"database": {"engine_version": NEW_ENGINE}},
        {("database cluster", "engine version")},
        {"rds.ModifyDBCluster"},
        check=check_cluster(EngineVersion=NEW_ENGINE),
    ),
    row(
        "database.min_capacity",
        {"database": {"min_capacity": 1}},
        {("database cluster", "min capacity")},
        {"rds.ModifyDBCluster"},
        check=check_cluster(MinCapacity=1.0, MaxCapacity=2.0),
    ),
    row(
        "database.min_capacity=0",
        {"database": {"min_capacity": 0}},
        {
            ("database cluster", "min capacity"),
            *taskdef("mlflow.environment MLFLOW_SQLALCHEMYSTORE_POOLCLASS"),
        },
        {"rds.ModifyDBCluster", *NEW_REVISION},
        check=check_null_pool,
    ),
    row(
        "database.max_capacity",
        {"database": {"max_capacity": 8}},
        {("database cluster", "max capacity")},
        {"rds.ModifyDBCluster"},
        check=check_cluster(MinCapacity=0.5, MaxCapacity=8.0),
    ),
    row(
        "database.deletion_protection",
        {"database": {"deletion_protection": True}},
        {("database cluster", "deletion protection")},
        {"rds.ModifyDBCluster"},
        check=check_cluster(DeletionProtection=True),
    ),
    row(
        "database.backup_retention_days",
        {"database": {"backup_retention_days": 14}},
        {("database cluster", "backup retention days")},
        {"rds.ModifyDBCluster"},
        check=check_cluster(BackupRetentionPeriod=14),
    ),
    row(
        "mlflow.image",
        {"mlflow": {"image": NEW_MLFLOW_IMAGE}},
        taskdef("mlflow.image"),
        NEW_REVISION,
        check=check_container(render.MLFLOW, image=NEW_MLFLOW_IMAGE),
    ),
    row(
        "mlflow.port",
        {"mlflow": {"port": 5001}},
        taskdef("mlflow.command", "mlflow.healthCheck", "oauth2-proxy.command"),
        NEW_REVISION,
        check=check_mlflow_port,
    ),
    row(
        "mlflow.cpu",
        {"mlflow": {"cpu": 2048, "memory": 4096}},
        taskdef("cpu", "memory", "mlflow.memoryReservation"),
        NEW_REVISION,
        check=check_size("2048", "4096"),
    ),
    row(
        "mlflow.memory",
        {"mlflow": {"memory": 4096}},
        taskdef("memory", "mlflow.memoryReservation"),
        NEW_REVISION,
        check=check_size("1024", "4096"),
    ),
    row(
        "mlflow.workers",
        {"mlflow": {"workers": 4}},
        taskdef("mlflow.command"),
        NEW_REVISION,
        check=check_mlflow_command("--workers 4"),
    ),
    row(
        "mlflow.gunicorn_opts",
        {"mlflow": {"gunicorn_opts": "--timeout 120"}},
        taskdef("mlflow.command"),
        NEW_REVISION,
        check=check_mlflow_command("--gunicorn-opts '--timeout 120'"),
    ),
    row(
        "oauth2_proxy.image",
        {"oauth2_proxy": {"image": NEW_PROXY_IMAGE}},
        taskdef("oauth2-proxy.image"),
        NEW_REVISION,
        check=check_container(render.PROXY, image=NEW_PROXY_IMAGE),
    ),
    row(
        "oauth2_proxy.port",
        {"oauth2_proxy": {"port": 4181}},
        {
            ("security group", "ingress"),
            ("service", "load balancer"),
            *taskdef("oauth2-proxy.command", "oauth2-proxy.portMappings"),
        },
        # No target group call: it is not replaced (see compare_target_group).
        {"ec2.RevokeSecurityGroupIngress", "ec2.AuthorizeSecurityGroupIngress", *NEW_REVISION},
        actions=(
            ("security group", "mlflow-tasks", UPDATE),
            ("target group", "mlflow-proxy", NOOP),
        ),
        check=check_proxy_port,
    ),
    row(
        "oauth2_proxy.provider",
        {"oauth2_proxy": {"provider": "github"}},
        taskdef("oauth2-proxy.command"),
        NEW_REVISION,
        check=check_proxy_flag("--provider=github"),
    ),
    row(
        "oauth2_proxy.email_domains",
        {"oauth2_proxy": {"email_domains": ["example.com"]}},
        taskdef("oauth2-proxy.command"),
        NEW_REVISION,
        check=check_proxy_flag("--email-domain=example.com"),
    ),
    row(
        "oauth2_proxy.extra_jwt_issuers",
        {"oauth2_proxy": {"extra_jwt_issuers": [ISSUER]}},
        taskdef("oauth2-proxy.command"),
        NEW_REVISION,
        check=check_proxy_flag(f"--extra-jwt-issuers={ISSUER}"),
    ),
    row(
        "oauth2_proxy.client_id",
        {"oauth2_proxy": {"client_id": "another-client.apps.googleusercontent.com"}},
        SECRET_CHANGED,
        {"secrets-manager.PutSecretValue", UPDATE_SERVICE},
        actions=(("secret", CID, UPDATE), ("secret", CSECRET, NOOP)),
        check=check_secret(CID, "another-client.apps.googleusercontent.com"),
    ),
    row(
        "OAUTH2_PROXY_CLIENT_SECRET",
        {},
        SECRET_CHANGED,
        {"secrets-manager.PutSecretValue", UPDATE_SERVICE},
        env={**ENV, "OAUTH2_PROXY_CLIENT_SECRET": "GOCSPX-rotated"},
        actions=(("secret", CSECRET, UPDATE), ("secret", CID, NOOP)),
        check=check_secret(CSECRET, "GOCSPX-rotated"),
    ),
    row(
        "load_balancer.certificate_arn",
        HTTPS,
        {
            ("security group", "ingress"),
            ("listener", "default action"),
            ("listener", "certificate"),
            *taskdef(
                "mlflow.environment MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "oauth2-proxy.command"
            ),
        },
        {
            "ec2.AuthorizeSecurityGroupIngress",
            f"{ELB}.CreateListener",
            f"{ELB}.ModifyListener",
            *NEW_REVISION,
        },
        actions=(
            ("listener", "443", CREATE),
            ("listener", "80", UPDATE),
            ("security group", "mlflow-alb", UPDATE),
        ),
        check=check_https,
    ),
    row(
        "load_balancer.certificate_arn=''",
        {},
        {
            ("security group", "ingress"),
            ("listener", "default action"),
            *taskdef(
                "mlflow.environment MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "oauth2-proxy.command"
            ),
        },
        {
            "ec2.RevokeSecurityGroupIngress",
            f"{ELB}.DeleteListener",
            f"{ELB}.ModifyListener",
            *NEW_REVISION,
        },
        base=HTTPS,
        actions=(("listener", "443", DELETE), ("listener", "80", UPDATE)),
        check=check_http_only,
    ),
    row(
        "load_balancer.domain",
        {"load_balancer": {"certificate_arn": CERT, "domain": DOMAIN}},
        taskdef(
            "mlflow.environment MLFLOW_SERVER_ALLOWED_HOSTS",
            CORS,
            "oauth2-proxy.command",
        ),
        NEW_REVISION,
        base=HTTPS,
        check=check_domain,
    ),
    row(
        "load_balancer.idle_timeout",
        {"load_balancer": {"idle_timeout": 120}},
        {("load balancer", "idle_timeout.timeout_seconds")},
        {f"{ELB}.ModifyLoadBalancerAttributes"},
        check=check_idle_timeout,
    ),
    row(
        "service.desired_count",
        {"service": {"desired_count": 2}},
        {("service", "desired count")},
        {UPDATE_SERVICE},
        check=check_desired_count,
    ),
    row(
        "service.log_retention_days",
        {"service": {"log_retention_days": 90}},
        {("log group", "retention days")},
        {"cloudwatch-logs.PutRetentionPolicy"},
        check=check_retention,
    ),
    row(
        "service.health_check_grace_seconds",
        {"service": {"health_check_grace_seconds": 300}},
        {("service", "health check grace seconds")},
        {UPDATE_SERVICE},  # moto keeps no grace period: see ecs_reports_grace_period
    ),
]


@pytest.fixture
def ecs_reports_grace_period(aws: AwsContext) -> Iterator[dict[str, int]]:
    """ECS reports a service's healthCheckGracePeriodSeconds; moto ignores it when given and
    leaves it out of describe_services (so `plan` could never see it differ). This makes the
    stack's ECS client see what AWS would: the value last given to create or update_service."""
    given: dict[str, int] = {}

    def remember(params: dict[str, Any], **_: Any) -> None:
        name = str(params.get("serviceName") or params.get("service", "")).rsplit("/", 1)[-1]
        if "healthCheckGracePeriodSeconds" in params:
            given[name] = int(params["healthCheckGracePeriodSeconds"])

    def report(parsed: dict[str, Any], **_: Any) -> None:
        for svc in parsed.get("services", []):
            if svc.get("serviceName") in given:
                svc["healthCheckGracePeriodSeconds"] = given[svc["serviceName"]]

    events = aws.ecs.meta.events
    events.register("provide-client-params.ecs.CreateService", remember)
    events.register("provide-client-params.ecs.UpdateService", remember)
    events.register("after-call.ecs.DescribeServices", report)
    yield given


@pytest.mark.parametrize("case", ROWS)
def test_a_changed_key_is_planned_applied_in_place_and_then_clean(
    aws: AwsContext, calls: Calls, ecs_reports_grace_period: dict[str, int], case: Case
) -> None:
    cert = new_certificate() if CERT in repr((case.base, case.new)) else ""
    base = make_config(with_certificate(case.base, cert))
    engine.up(step_context(aws, base))
    assert not engine.plan(step_context(aws, base)).changed
    cfg = make_config(with_certificate(case.new, cert), case.env)

    calls.clear()
    planned = engine.plan(step_context(aws, cfg))
    assert calls.mutating() == {}
    assert planned.changed
    assert not planned.blocked
    assert case.names <= pairs(planned), sorted(case.names - pairs(planned))
    assert not [c for c in planned.changes if c.action == REPLACE]
    got_actions = actions(planned)
    for kind, name, action in case.actions:
        assert got_actions[(kind, name)] == action, (kind, name)
    for c in planned.changes:
        for d in c.diffs:
            assert d.sensitive == (d.attribute == "value"), (c.kind, d)
    if case.plan_check:
        case.plan_check(planned)

    calls.clear()
    engine.up(step_context(aws, cfg))
    assert set(calls.mutating()) == case.calls

    again = engine.plan(step_context(aws, cfg))
    assert not again.changed, [(c.kind, c.name, c.summary()) for c in again.changes if c.changed]
    if case.check:
        case.check(cfg)


def test_the_grace_period_row_reaches_update_service(
    aws: AwsContext, ecs_reports_grace_period: dict[str, int]
) -> None:
    """What the emulation above sees is what the service was given: the key is applied."""
    engine.up(step_context(aws, make_config()))
    assert ecs_reports_grace_period == {"mlflow": 120}
    engine.up(step_context(aws, make_config({"service": {"health_check_grace_seconds": 300}})))
    assert ecs_reports_grace_period == {"mlflow": 300}


# --- your own VPC ----------------------------------------------------------------------------


@pytest.fixture
def rds_keeps_modified_subnet_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's modify_db_subnet_group pops the group from its table and never puts it back
    (moto 5.2.5), so the group seems gone after it is modified; AWS keeps it."""
    from moto.rds.models import RDSBackend

    original = RDSBackend.modify_db_subnet_group

    def modify(self: RDSBackend, subnet_name: str, description: str, subnets: Any) -> Any:
        group = original(self, subnet_name, description, subnets)
        self.subnet_groups[subnet_name] = group
        return group

    monkeypatch.setattr(RDSBackend, "modify_db_subnet_group", modify)


@pytest.fixture
def user_vpc(aws: AwsContext) -> dict[str, Any]:
    """A VPC of the user's own with six subnets, alternating between two zones."""
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"{REGION}{'ab'[i % 2]}"
        )["Subnet"]["SubnetId"]
        for i in range(6)
    ]
    return {"vpc_id": vpc, "subnets": subnets}


@pytest.mark.parametrize(
    ("key", "names", "want_calls"),
    [
        pytest.param(
            "private_subnet_ids",
            {("db subnet group", "subnets")},
            {"rds.ModifyDBSubnetGroup"},
            id="network.private_subnet_ids",
        ),
        pytest.param(
            "public_subnet_ids",
            {("load balancer", "subnets"), ("service", "network")},
            {f"{ELB}.SetSubnets", UPDATE_SERVICE},
            id="network.public_subnet_ids",
        ),
    ],
)
def test_other_subnets_of_your_vpc_are_used_in_place(
    aws: AwsContext,
    calls: Calls,
    user_vpc: dict[str, Any],
    rds_keeps_modified_subnet_groups: None,
    key: str,
    names: set[tuple[str, str]],
    want_calls: set[str],
) -> None:
    s = user_vpc["subnets"]
    network = {"vpc_id": user_vpc["vpc_id"], "public_subnet_ids": s[0:2]}
    network["private_subnet_ids"] = s[2:4]
    engine.up(step_context(aws, make_config({"network": network})))
    cfg = make_config({"network": network | {key: s[4:6]}})

    calls.clear()
    planned = engine.plan(step_context(aws, cfg))
    assert planned.changed and not planned.blocked
    assert names <= pairs(planned)
    calls.clear()
    engine.up(step_context(aws, cfg))
    assert set(calls.mutating()) == want_calls

    assert not engine.plan(step_context(aws, cfg)).changed
    if key == "private_subnet_ids":
        group = client("rds").describe_db_subnet_groups(DBSubnetGroupName="mlflow-db")
        got = {x["SubnetIdentifier"] for x in group["DBSubnetGroups"][0]["Subnets"]}
    else:
        zones = the_load_balancer(cfg)["AvailabilityZones"]
        got = {z["SubnetId"] for z in zones}
    assert got == set(s[4:6])


def test_network_cidr_means_nothing_with_your_vpc(
    aws: AwsContext, calls: Calls, user_vpc: dict[str, Any]
) -> None:
    """The block of a VPC the stack makes: with yours, it is not a change (nor blocked)."""
    s = user_vpc["subnets"]
    network = {"vpc_id": user_vpc["vpc_id"], "public_subnet_ids": s[0:2]}
    network["private_subnet_ids"] = s[2:4]
    engine.up(step_context(aws, make_config({"network": network})))
    cfg = make_config({"network": network | {"cidr": "10.50.0.0/16"}})
    assert not engine.plan(step_context(aws, cfg)).changed
    calls.clear()
    engine.up(step_context(aws, cfg))
    assert calls.mutating() == {}


# --- what up does not apply in place ---------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "kind", "attribute"),
    [
        pytest.param({"network": {"cidr": "10.43.0.0/16"}}, "vpc", "network.cidr", id="cidr"),
        pytest.param(
            {"database": {"name": "tracking"}},
            "database cluster",
            "database.name",
            id="database.name",
        ),
        pytest.param(
            {"database": {"username": "tracker"}},
            "database cluster",
            "database.username",
            id="database.username",
        ),
    ],
)
def test_a_key_up_cannot_apply_is_planned_blocked_and_up_refuses_before_any_change(
    aws: AwsContext, calls: Calls, new: dict[str, Any], kind: str, attribute: str
) -> None:
    engine.up(step_context(aws, make_config()))
    cfg = make_config(new)

    planned = engine.plan(step_context(aws, cfg))
    [blocked] = planned.blocked
    assert (blocked.kind, blocked.action) == (kind, REPLACE)
    assert blocked.has(attribute)
    assert "put back" in blocked.blocked
    assert blocked not in planned.destructive  # not offered for confirmation: refused

    calls.clear()
    with pytest.raises(engine.Blocked) as raised:
        engine.up(step_context(aws, cfg))
    assert isinstance(raised.value, UsageError)
    assert raised.value.exit_code == 2
    assert blocked.blocked in raised.value.message
    assert calls.mutating() == {}

    # Nothing moved: the old config still matches the stack, the new one is still refused.
    assert not engine.plan(step_context(aws, make_config())).changed
    assert engine.plan(step_context(aws, cfg)).blocked
    cluster = db_cluster(cfg)
    assert (cluster["DatabaseName"], cluster["MasterUsername"]) == ("mlflow", "mlflow")


def test_an_older_engine_version_is_no_change(aws: AwsContext, calls: Calls) -> None:
    """AWS upgrades minor versions by itself and never downgrades: an older one is no change."""
    engine.up(step_context(aws, make_config({"database": {"engine_version": NEW_ENGINE}})))
    cfg = make_config({"database": {"engine_version": OLDER_ENGINE}})

    calls.clear()
    assert not engine.plan(step_context(aws, cfg)).changed
    engine.up(step_context(aws, cfg))
    assert calls.mutating() == {}
    assert db_cluster(cfg)["EngineVersion"] == NEW_ENGINE


def test_an_internal_load_balancer_replaces_the_load_balancer(
    aws: AwsContext, calls: Calls
) -> None:
    """Not blocked: up (after the CLI's confirmation) deletes it and makes an internal one."""
    engine.up(step_context(aws, make_config()))
    before = the_load_balancer(make_config())
    tg = target_group_arn(make_config())
    cfg = make_config({"load_balancer": {"internal": True}})

    planned = engine.plan(step_context(aws, cfg))
    lb = next(c for c in planned.changes if c.kind == "load balancer")
    assert (lb.action, lb.blocked) == (REPLACE, "")
    scheme = lb.get("scheme")
    assert scheme is not None
    assert (scheme.old, scheme.new) == ("internet-facing", "internal")
    assert planned.destructive == [lb]
    assert actions(planned)[("listener", "80")] == CREATE  # it goes with the old one
    assert actions(planned)[("target group", "mlflow-proxy")] == NOOP

    calls.clear()
    engine.up(step_context(aws, cfg))
    made = set(calls.mutating())
    assert {f"{ELB}.DeleteLoadBalancer", f"{ELB}.CreateLoadBalancer"} <= made
    # Also its attributes and listener; and, on AWS, where the new DNS name differs, a task
    # definition revision (moto names every load balancer <name>-1.<region>...: the same one).
    assert made <= {
        f"{ELB}.DeleteLoadBalancer",
        f"{ELB}.CreateLoadBalancer",
        f"{ELB}.ModifyLoadBalancerAttributes",
        f"{ELB}.CreateListener",
        *NEW_REVISION,
    }
    assert not engine.plan(step_context(aws, cfg)).changed

    after = the_load_balancer(cfg)
    assert after["LoadBalancerArn"] != before["LoadBalancerArn"]
    assert after["Scheme"] == "internal"
    roles = subnets_by_role(cfg)
    private = {roles["private-a"], roles["private-b"]}
    assert {z["SubnetId"] for z in after["AvailabilityZones"]} == private
    assert sorted(listeners(cfg)) == [80]
    assert target_group_arn(cfg) == tg
    assert the_service(cfg)["loadBalancers"][0]["targetGroupArn"] == tg


def test_another_stack_name_is_another_stack(aws: AwsContext, calls: Calls) -> None:
    first = make_config()
    engine.up(step_context(aws, first))
    other = make_config({"stack": {"name": "other"}})

    calls.clear()
    planned = engine.plan(step_context(aws, other))
    assert calls.mutating() == {}
    assert {c.action for c in planned.changes} == {CREATE}
    named = [c for c in planned.changes if c.kind not in {"service", "listener"}]
    assert all("other" in c.name for c in named)

    engine.up(step_context(aws, other))
    assert not engine.plan(step_context(aws, other)).changed
    assert not engine.plan(step_context(aws, first)).changed  # the first stack: untouched


# --- found while writing these (fixed) ------------------------------------------------------


def test_listeners_follow_a_change_of_stack_tags(aws: AwsContext) -> None:
    engine.up(step_context(aws, make_config(tags({"team": "a"}))))
    cfg = make_config(tags({"team": "b"}))

    planned = engine.plan(step_context(aws, cfg))
    assert ("listener", "tag team") in pairs(planned)
    engine.up(step_context(aws, cfg))
    arn = listeners(cfg)[80]["ListenerArn"]
    got = client("elbv2").describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"]
    assert tag_dict(got)["team"] == "b"
