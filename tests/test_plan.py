"""`mlflow-ecs plan`: what `up` would do, shown without doing any of it (moto in-process).

This file shows that:
- plan makes no mutating AWS call: a botocore hook fails the test on any operation not named
  Describe/Get/List/Head, for a missing stack, a matching one and one with drift, in the
  engine and through the CLI (`plan` and `plan --json`);
- plan of a missing stack lists every resource as "create" (exit 2); right after `up` it says
  no changes (`Plan.changed` is False, exit 0);
- drift made outside the tool (an ingress rule added, the desired count changed, the bucket's
  public access block removed, a foreign task-definition revision deployed, the log retention
  changed, a tag removed) shows in plan (that resource, "update", the attribute old → new) and
  in status (`drift`, "differs" in the row, `status --json`); the next `up` makes only the
  calls that put that back, and a second plan is clean;
- `plan --json` is one document with the documented keys and no secret value; a changed OAuth
  client secret is a sensitive update and a service redeploy, shown as "(sensitive)";
- plan's exit codes: 0 no change, 2 changes, 1 for a config error and for an AWS error;
- `up` of an existing stack prints the plan on stderr before acting; an update needs no
  confirmation; a replacement (internet-facing → internal load balancer) with no terminal and
  no --yes is refused with nothing changed, and with --yes it is made;
- `up` of a fresh stack prints no plan and asks nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import (
    CLIENT_SECRET,
    ENV,
    REGION,
    ApiCalls,
    Calls,
    Cli,
    MutatingCallError,
    is_read,
    make_config,
    step_context,
)

from mlflow_ecs import config, engine
from mlflow_ecs.aws import AwsContext, tag_dict
from mlflow_ecs.changes import ACTIONS, CREATE, NOOP, REPLACE, SENSITIVE, UPDATE, Change, Plan
from mlflow_ecs.config import Config, Names

ACCOUNT = "123456789012"  # moto's
TAGS = {"team": "ml"}
FOREIGN_IMAGE = "ghcr.io/someone-else/mlflow:v0.0.1"
NEW_SECRET = "GOCSPX-a-rotated-client-secret-456"
CLI_STACK = "plan-test"
CLI_CONFIG = f"""
[stack]
name = "{CLI_STACK}"
tags = {{ team = "ml" }}

[oauth2_proxy]
email_domains = ["example.com"]
"""


def client(service: str) -> Any:
    """A boto3 client outside any AwsContext: changes made "in the console", not counted."""
    make: Any = boto3.client  # one helper for every service (the stubs want a literal name)
    return make(service, region_name=REGION)


# --- read-only guards ------------------------------------------------------------------------


class ReadOnly:
    """A botocore before-call hook: records every operation, fails on any mutating one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.mutating: list[str] = []

    def __call__(self, event_name: str, **kwargs: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.seen.append(f"{service}.{operation}")
        if not is_read(operation):
            self.mutating.append(f"{service}.{operation}")
            raise MutatingCallError(f"plan made a mutating call: {service}.{operation}")


def read_only_plan(cfg: Config) -> Plan:
    """engine.plan on its own AwsContext whose every client fails on a mutating call."""
    guard = ReadOnly()
    found = engine.plan(step_context(AwsContext(REGION, hooks=[("before-call.*.*", guard)]), cfg))
    assert guard.mutating == []
    assert len(guard.seen) > 10  # it did read the stack
    return found


def one(found: Plan | list[Change], kind: str, name: str) -> Change:
    changes = found.changes if isinstance(found, Plan) else found
    matches = [c for c in changes if c.kind == kind and c.name == name]
    assert len(matches) == 1, f"{kind} {name}: {changes}"
    return matches[0]


def changed(found: Plan) -> set[tuple[str, str]]:
    return {(c.kind, c.name) for c in found.changes if c.changed}


# --- engine fixtures -------------------------------------------------------------------------


@pytest.fixture
def cfg() -> Config:
    return make_config({"stack": {"name": "mlflow", "tags": TAGS}})


@pytest.fixture
def stack(aws: AwsContext, calls: Calls, cfg: Config) -> Config:
    """A stack that engine.up made (the calls counted from here on)."""
    engine.up(step_context(aws, cfg))
    calls.clear()
    return cfg


def names_of(cfg: Config) -> Names:
    return cfg.names(ACCOUNT, REGION)


# --- drift made outside the tool ---------------------------------------------------------------


def group_id(name: str) -> str:
    groups = client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    assert len(groups) == 1
    return str(groups[0]["GroupId"])


def open_ssh(n: Names) -> None:
    client("ec2").authorize_security_group_ingress(
        GroupId=group_id(n.sg_alb),
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )


def scale_to_3(n: Names) -> None:
    client("ecs").update_service(cluster=n.ecs_cluster, service=n.service, desiredCount=3)


def remove_public_access_block(n: Names) -> None:
    client("s3").delete_public_access_block(Bucket=n.bucket)


REGISTERABLE = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "runtimePlatform",
)


def service_task_definition(n: Names) -> dict[str, Any]:
    ecs = client("ecs")
    svc = ecs.describe_services(cluster=n.ecs_cluster, services=[n.service])["services"][0]
    td = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"], include=["TAGS"])
    return dict(td["taskDefinition"]) | {"tags": td.get("tags", [])}


def deploy_foreign_revision(n: Names) -> None:
    """Someone registers a copy of the running revision with another mlflow image, deploys it."""
    current = service_task_definition(n)
    copy = {k: current[k] for k in REGISTERABLE if current.get(k)}
    for container in copy["containerDefinitions"]:
        if container["name"] == "mlflow":
            container["image"] = FOREIGN_IMAGE
    ecs = client("ecs")
    arn = ecs.register_task_definition(**copy, tags=current["tags"])["taskDefinition"][
        "taskDefinitionArn"
    ]
    ecs.update_service(cluster=n.ecs_cluster, service=n.service, taskDefinition=arn)


def shorten_retention(n: Names) -> None:
    client("logs").put_retention_policy(logGroupName=n.log_group, retentionInDays=7)


def untag_cluster(n: Names) -> None:
    ecs = client("ecs")
    arn = ecs.describe_clusters(clusters=[n.ecs_cluster])["clusters"][0]["clusterArn"]
    ecs.untag_resource(resourceArn=arn, tagKeys=["team"])


ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"


def attach_admin_to_task_role(n: Names) -> None:
    client("iam").attach_role_policy(RoleName=n.task_role, PolicyArn=ADMIN)


@dataclass(frozen=True)
class Drift:
    make: Callable[[Names], None]
    kind: str
    name: Callable[[Names], str]
    attribute: str
    old: Any
    new: Any
    fix: frozenset[str]  # the mutating calls of the `up` that puts it back, and no other
    also_changed: tuple[str, ...] = ()  # kinds of other resources the plan says change


DEFAULT_MLFLOW_IMAGE = config.Mlflow().image
DRIFTS = {
    "ingress-rule-added": Drift(
        open_ssh,
        "security group",
        lambda n: n.sg_alb,
        "ingress",
        "tcp 22 from 0.0.0.0/0",
        None,
        frozenset({"ec2.RevokeSecurityGroupIngress"}),
    ),
    "desired-count-changed": Drift(
        scale_to_3,
        "service",
        lambda n: n.service,
        "desired count",
        3,
        1,
        frozenset({"ecs.UpdateService"}),
    ),
    "public-access-block-removed": Drift(
        remove_public_access_block,
        "bucket",
        lambda n: n.bucket,
        "public access block",
        "(none)",
        "all four blocked",
        frozenset({"s3.PutPublicAccessBlock"}),
    ),
    "foreign-task-definition-deployed": Drift(
        deploy_foreign_revision,
        "task definition",
        lambda n: n.task_family,
        "mlflow.image",
        FOREIGN_IMAGE,
        DEFAULT_MLFLOW_IMAGE,
        frozenset({"ecs.RegisterTaskDefinition", "ecs.UpdateService"}),
        also_changed=("service",),
    ),
    "log-retention-changed": Drift(
        shorten_retention,
        "log group",
        lambda n: n.log_group,
        "retention days",
        7,
        30,
        frozenset({"cloudwatch-logs.PutRetentionPolicy"}),
    ),
    "tag-removed": Drift(
        untag_cluster,
        "ecs cluster",
        lambda n: n.ecs_cluster,
        "tag team",
        None,
        "ml",
        frozenset({"ecs.TagResource"}),
    ),
    "managed-policy-attached": Drift(
        attach_admin_to_task_role,
        "task role",
        lambda n: n.task_role,
        "managed policy",
        ADMIN,
        None,
        frozenset({"iam.DetachRolePolicy"}),
    ),
}


@pytest.fixture(params=list(DRIFTS), ids=list(DRIFTS))
def drift(request: pytest.FixtureRequest) -> Drift:
    return DRIFTS[request.param]


# --- plan in the engine: read-only, create / unchanged ----------------------------------------


def test_plan_of_a_missing_stack_is_every_resource_to_create_without_a_mutating_call(
    aws: AwsContext, cfg: Config
) -> None:
    found = read_only_plan(cfg)
    assert found.changed is True
    assert found.exists is False
    assert {c.action for c in found.changes} == {CREATE}
    n = names_of(cfg)
    for kind, name in [
        ("vpc", n.vpc),
        ("security group", n.sg_alb),
        ("bucket", n.bucket),
        ("database cluster", n.db_cluster),
        ("load balancer", n.alb),
        ("task definition", n.task_family),
        ("service", n.service),
    ]:
        assert one(found, kind, name).action == CREATE
    # Every resource: the same ones as in the plan of the stack that up then makes.
    engine.up(step_context(aws, cfg))
    made = read_only_plan(cfg)
    assert [(c.kind, c.name) for c in found.changes] == [(c.kind, c.name) for c in made.changes]


def test_plan_right_after_up_is_all_unchanged_without_a_mutating_call(stack: Config) -> None:
    found = read_only_plan(stack)
    assert found.changed is False
    assert found.exists is True
    assert {c.action for c in found.changes} == {NOOP}
    assert len(found.changes) >= 19  # every resource status lists, and more (subnets, listener)
    assert found.summary() == "No changes: stack 'mlflow' matches the config."


# --- drift: plan, status, and the up that puts it back ----------------------------------------


def test_drift_shows_in_plan_as_an_update_of_that_attribute_without_a_mutating_call(
    stack: Config, drift: Drift
) -> None:
    n = names_of(stack)
    drift.make(n)
    found = read_only_plan(stack)
    c = one(found, drift.kind, drift.name(n))
    assert c.action == UPDATE
    d = c.get(drift.attribute)
    assert d is not None, c
    assert (d.old, d.new) == (drift.old, drift.new)
    assert {kind for kind, _ in changed(found)} == {drift.kind, *drift.also_changed}


def test_drift_shows_in_status_with_differs_in_its_row(
    aws: AwsContext, stack: Config, drift: Drift
) -> None:
    n = names_of(stack)
    drift.make(n)
    st = engine.status(step_context(aws, stack))
    assert st.drift_error == ""
    c = one(st.drift, drift.kind, drift.name(n))
    assert c.action == UPDATE
    assert c.has(drift.attribute)
    row = next(r for r in st.resources if r.name == drift.name(n) and r.kind in drift.kind)
    assert "differs" in row.detail
    assert drift.attribute in row.detail
    doc = st.to_dict()["drift"]
    entry = next(e for e in doc if (e["kind"], e["name"]) == (drift.kind, drift.name(n)))
    want = {"attribute": drift.attribute, "old": drift.old, "new": drift.new}
    assert want | {"sensitive": False} in entry["changes"]


def test_up_after_drift_makes_only_the_calls_that_put_it_back_and_plan_is_clean_again(
    aws: AwsContext, calls: Calls, stack: Config, drift: Drift
) -> None:
    drift.make(names_of(stack))
    assert read_only_plan(stack).changed is True
    calls.clear()
    engine.up(step_context(aws, stack))
    assert set(calls.mutating()) == drift.fix
    again = read_only_plan(stack)
    assert again.changed is False, changed(again)


def test_a_foreign_revision_shows_as_the_services_task_definition_and_up_puts_ours_back(
    aws: AwsContext, stack: Config
) -> None:
    n = names_of(stack)
    deploy_foreign_revision(n)
    foreign = service_task_definition(n)["taskDefinitionArn"]
    svc = one(read_only_plan(stack), "service", n.service)
    assert svc.action == UPDATE
    d = svc.get("task definition")
    assert d is not None
    assert d.old == foreign.rsplit("/", 1)[-1]
    assert d.new != d.old

    engine.up(step_context(aws, stack))
    running = service_task_definition(n)
    assert running["taskDefinitionArn"] != foreign
    images = {c["name"]: c["image"] for c in running["containerDefinitions"]}
    assert images["mlflow"] == stack.mlflow.image
    assert read_only_plan(stack).changed is False


def test_up_after_an_added_ingress_rule_revokes_it(aws: AwsContext, stack: Config) -> None:
    n = names_of(stack)
    open_ssh(n)
    engine.up(step_context(aws, stack))
    group = client("ec2").describe_security_groups(GroupIds=[group_id(n.sg_alb)])
    ports = {p.get("FromPort") for p in group["SecurityGroups"][0]["IpPermissions"]}
    assert 22 not in ports
    assert ports == {80}


def test_up_after_a_removed_tag_sets_it_again(aws: AwsContext, stack: Config) -> None:
    n = names_of(stack)
    untag_cluster(n)
    engine.up(step_context(aws, stack))
    got = client("ecs").describe_clusters(clusters=[n.ecs_cluster], include=["TAGS"])
    assert tag_dict(got["clusters"][0]["tags"], "key", "value")["team"] == "ml"


def test_a_subnet_whose_role_tag_was_removed_is_retagged_not_made_again(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    """The role tag is how up tells the subnets apart; without it the subnet is found by its
    address block (a second subnet with that block would be refused by AWS for ever)."""
    n = names_of(stack)
    ec2 = client("ec2")
    subnet = ec2.describe_subnets(
        Filters=[{"Name": "tag:Name", "Values": [f"{n.stack}-public-a"]}]
    )["Subnets"][0]
    ec2.delete_tags(Resources=[subnet["SubnetId"]], Tags=[{"Key": "mlflow-ecs:role"}])
    table = ec2.describe_route_tables(
        Filters=[{"Name": "tag:mlflow-ecs:role", "Values": ["public"]}]
    )["RouteTables"][0]
    ec2.delete_tags(Resources=[table["RouteTableId"]], Tags=[{"Key": "mlflow-ecs:role"}])

    planned = read_only_plan(stack)
    assert changed(planned) == {
        ("subnet", f"{n.stack}-public-a"),
        ("route table", f"{n.stack}-public"),
    }
    tag = one(planned, "subnet", f"{n.stack}-public-a").get("tag mlflow-ecs:role")
    assert tag is not None and (tag.old, tag.new) == (None, "public-a")
    engine.up(step_context(aws, stack))
    assert calls.mutating() == {"ec2.CreateTags": 2}
    assert read_only_plan(stack).changed is False


def test_a_vpc_that_lost_its_owner_tag_stops_up_and_says_how_to_put_it_back(
    aws: AwsContext, calls: Calls, stack: Config
) -> None:
    ec2 = client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:mlflow-ecs:stack", "Values": ["mlflow"]}])
    vpc_id = vpc["Vpcs"][0]["VpcId"]
    ec2.delete_tags(Resources=[vpc_id], Tags=[{"Key": "mlflow-ecs:stack"}])

    blocked = read_only_plan(stack).blocked
    assert [c.kind for c in blocked] == ["target group"]
    assert f"aws ec2 create-tags --resources {vpc_id}" in blocked[0].blocked
    with pytest.raises(engine.Blocked) as caught:
        engine.up(step_context(aws, stack))
    assert vpc_id in caught.value.message
    assert calls.mutating() == {}


def test_an_environment_variable_named_like_a_secret_is_shown_sensitive(
    aws: AwsContext, stack: Config
) -> None:
    """Someone else's revision may carry a plaintext secret: plan never prints its value."""
    n = names_of(stack)
    current = service_task_definition(n)
    copy = {k: current[k] for k in REGISTERABLE if current.get(k)}
    for container in copy["containerDefinitions"]:
        if container["name"] == "mlflow":
            container["environment"] = [
                *container.get("environment", []),
                {"name": "AWS_SECRET_ACCESS_KEY", "value": "plain-text-key-123"},
            ]
    ecs = client("ecs")
    arn = ecs.register_task_definition(**copy)["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=n.ecs_cluster, service=n.service, taskDefinition=arn)

    td = one(read_only_plan(stack), "task definition", n.task_family)
    d = td.get("mlflow.environment AWS_SECRET_ACCESS_KEY")
    assert d is not None and d.sensitive and d.new is None
    assert "plain-text-key-123" not in json.dumps(td.to_dict())


def test_a_fresh_stack_in_your_own_vpc_is_not_an_existing_stack(aws: AwsContext) -> None:
    """The referenced VPC is there from the start: it does not make up show a plan."""
    ec2 = aws.ec2
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    zones = [f"{REGION}a", f"{REGION}b"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.7.{i}.0/24", AvailabilityZone=zones[i % 2])[
            "Subnet"
        ]["SubnetId"]
        for i in range(4)
    ]
    cfg = make_config(
        {
            "network": {
                "vpc_id": vpc,
                "public_subnet_ids": subnets[:2],
                "private_subnet_ids": subnets[2:],
            }
        }
    )
    planned = read_only_plan(cfg)
    assert planned.changed and not planned.exists
    assert one(planned, "vpc", vpc).referenced


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(CLI_CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def deployed(moto: None, cli: Cli, cfg_file: Path) -> Iterator[Path]:
    """A stack that `mlflow-ecs up` made."""
    cli("up", "-c", str(cfg_file))
    yield cfg_file


def cli_names() -> Names:
    return config.parse({"stack": {"name": CLI_STACK}}, ENV).names(ACCOUNT, REGION)


def plan_doc(cli: Cli, cfg_file: Path, code: int) -> dict[str, Any]:
    doc = json.loads(cli("plan", "--json", "-c", str(cfg_file), code=code).stdout)
    assert isinstance(doc, dict)
    return doc


def resource(doc: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in doc["resources"] if (r["kind"], r["name"]) == (kind, name)]
    assert len(found) == 1, (kind, name)
    return dict(found[0])


def with_config(path: Path, extra: str) -> Path:
    path.write_text(CLI_CONFIG + extra, encoding="utf-8")
    return path


def db_password() -> str:
    got = client("secretsmanager").get_secret_value(SecretId=cli_names().secret_db_password)
    return str(got["SecretString"])


def scheme() -> str:
    lbs = client("elbv2").describe_load_balancers(Names=[cli_names().alb])["LoadBalancers"]
    return str(lbs[0]["Scheme"])


# --- plan through the CLI: read-only, exit codes, JSON ----------------------------------------


@pytest.mark.parametrize("args", [["plan"], ["plan", "--json"]], ids=["table", "json"])
def test_cli_plan_of_a_missing_stack_makes_no_mutating_call_and_exits_2(
    moto: None, cli: Cli, cfg_file: Path, api_calls: ApiCalls, args: list[str]
) -> None:
    api_calls.strict = True
    cli(*args, "-c", str(cfg_file), code=2)
    assert api_calls.mutating() == []
    assert len(api_calls.seen) > 10


@pytest.mark.parametrize("args", [["plan"], ["plan", "--json"]], ids=["table", "json"])
def test_cli_plan_of_a_drifted_stack_makes_no_mutating_call_and_exits_2(
    deployed: Path, cli: Cli, api_calls: ApiCalls, args: list[str]
) -> None:
    shorten_retention(cli_names())
    api_calls.clear()
    api_calls.strict = True
    result = cli(*args, "-c", str(deployed), code=2)
    assert api_calls.mutating() == []
    assert "retention days" in result.stdout


def test_cli_plan_right_after_up_says_no_changes_and_exits_0(
    deployed: Path, cli: Cli, api_calls: ApiCalls
) -> None:
    api_calls.strict = True
    result = cli("plan", "-c", str(deployed), code=0)
    assert f"No changes: stack '{CLI_STACK}' matches the config." in result.stdout
    doc = plan_doc(cli, deployed, code=0)
    assert doc["changed"] is False
    assert doc["summary"][NOOP] == len(doc["resources"])
    assert api_calls.mutating() == []


def test_cli_plan_of_a_missing_stack_lists_every_resource_to_create(
    moto: None, cli: Cli, cfg_file: Path
) -> None:
    doc = plan_doc(cli, cfg_file, code=2)
    assert doc["changed"] is True
    assert {r["action"] for r in doc["resources"]} == {CREATE}
    assert doc["summary"][CREATE] == len(doc["resources"])
    n = cli_names()
    kinds = {(r["kind"], r["name"]) for r in doc["resources"]}
    assert {("vpc", n.vpc), ("bucket", n.bucket), ("service", n.service)} <= kinds
    table = cli("plan", "-c", str(cfg_file), code=2).stdout
    assert re.search(rf"^\s*\+ service {n.service}\s+create", table, re.M)


def test_plan_json_is_one_document_with_the_documented_keys_and_no_secret(
    deployed: Path, cli: Cli
) -> None:
    shorten_retention(cli_names())
    result = cli("plan", "--json", "-c", str(deployed), code=2)
    doc = json.loads(result.stdout)  # the whole of stdout is one document
    assert {"stack", "region", "changed", "summary", "resources"} <= set(doc)
    assert (doc["stack"], doc["region"], doc["changed"]) == (CLI_STACK, REGION, True)
    assert set(doc["summary"]) == set(ACTIONS)
    for action in ACTIONS:
        assert doc["summary"][action] == sum(r["action"] == action for r in doc["resources"])
    for r in doc["resources"]:
        assert {"kind", "name", "action", "changes", "note", "blocked"} <= set(r)
        for c in r["changes"]:
            assert set(c) == {"attribute", "old", "new", "sensitive"}
    logs = resource(doc, "log group", cli_names().log_group)
    assert logs["action"] == UPDATE
    assert logs["changes"] == [
        {"attribute": "retention days", "old": 7, "new": 30, "sensitive": False}
    ]
    for value in (CLIENT_SECRET, db_password()):
        assert value not in result.output


def test_a_changed_client_secret_plans_a_sensitive_update_and_a_redeploy(
    deployed: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTH2_PROXY_CLIENT_SECRET", NEW_SECRET)
    n = cli_names()
    result = cli("plan", "--json", "-c", str(deployed), code=2)
    doc = json.loads(result.stdout)
    secret = resource(doc, "secret", n.secret_client_secret)
    assert secret["action"] == UPDATE
    assert secret["changes"] == [
        {"attribute": "value", "old": SENSITIVE, "new": SENSITIVE, "sensitive": True}
    ]
    svc = resource(doc, "service", n.service)
    assert svc["action"] == UPDATE
    assert "redeploy" in {c["attribute"] for c in svc["changes"]}
    table = cli("plan", "-c", str(deployed), code=2)
    assert "value: (sensitive) → (sensitive)" in table.stdout
    for output in (result.output, table.output):
        for value in (CLIENT_SECRET, NEW_SECRET, db_password()):
            assert value not in output


@pytest.mark.parametrize(
    "extra",
    ["\n[service]\ndesird_count = 2\n", "\n[service]\ndesired_count = -1\n"],
    ids=["unknown-key", "bad-value"],
)
def test_cli_plan_of_a_bad_config_exits_1_not_2_without_an_aws_call(
    moto: None, cli: Cli, cfg_file: Path, api_calls: ApiCalls, extra: str
) -> None:
    result = cli("plan", "-c", str(with_config(cfg_file, extra)), code=1)
    assert "service -> desird" in result.output or "service -> desired_count" in result.output
    assert result.stdout == ""
    assert api_calls.seen == []


def test_cli_plan_with_a_mistyped_option_exits_1_not_2(
    moto: None, cli: Cli, cfg_file: Path
) -> None:
    result = cli("plan", "-c", str(cfg_file), "--jsno", code=1)
    assert "--jsno" in result.output


def test_cli_plan_without_a_config_file_exits_1(
    moto: None, cli: Cli, tmp_path: Path, api_calls: ApiCalls
) -> None:
    missing = tmp_path / "nowhere.toml"
    result = cli("plan", "-c", str(missing), code=1)
    assert str(missing) in result.stderr
    assert api_calls.seen == []


def test_cli_plan_exits_1_on_an_aws_error(deployed: Path, cli: Cli, api_calls: ApiCalls) -> None:
    api_calls.fail["ecs.DescribeClusters"] = "AccessDeniedException"
    result = cli("plan", "-c", str(deployed), code=1)
    assert "AccessDeniedException" in result.stderr
    assert result.stdout == ""
    api_calls.fail.clear()
    cli("plan", "-c", str(deployed), code=0)


def test_drift_shows_in_cli_plan_and_in_status_json(deployed: Path, cli: Cli, drift: Drift) -> None:
    n = cli_names()
    drift.make(n)
    table = cli("plan", "-c", str(deployed), code=2).stdout
    assert re.search(rf"~ {drift.kind} {re.escape(drift.name(n))}\s+update", table)
    assert f"{drift.attribute}: " in table
    st = json.loads(cli("status", "--json", "-c", str(deployed)).stdout)
    entry = next(e for e in st["drift"] if (e["kind"], e["name"]) == (drift.kind, drift.name(n)))
    assert entry["action"] == UPDATE
    diff = next(c for c in entry["changes"] if c["attribute"] == drift.attribute)
    assert (diff["old"], diff["new"]) == (drift.old, drift.new)
    cli("up", "-c", str(deployed))
    cli("plan", "-c", str(deployed), code=0)
    assert json.loads(cli("status", "--json", "-c", str(deployed)).stdout)["drift"] == []


# --- up shows the plan; asks only before a replacement ------------------------------------------


def test_up_of_an_existing_stack_prints_the_plan_on_stderr_before_acting(
    deployed: Path, cli: Cli
) -> None:
    result = cli("up", "-c", str(with_config(deployed, "\n[service]\ndesired_count = 2\n")))
    err = result.stderr
    assert "desired count: 1 → 2" in err
    assert "Plan: 1 to update;" in err
    assert "desired count" not in result.stdout
    plan_at = err.index("Plan: 1 to update;")
    progress = re.search(r"^\s*\d+\.\ds service\s+ready", err, re.M)
    assert progress, err
    assert plan_at < progress.start() < err.index(f"Stack '{CLI_STACK}' is up")


def test_an_update_only_change_needs_no_yes_even_without_a_terminal(
    deployed: Path, cli: Cli
) -> None:
    result = cli("up", "-c", str(with_config(deployed, "\n[service]\ndesired_count = 2\n")))
    assert "--yes" not in result.output
    assert "Go ahead" not in result.output
    svc = client("ecs").describe_services(
        cluster=cli_names().ecs_cluster, services=[cli_names().service]
    )["services"][0]
    assert svc["desiredCount"] == 2


def test_a_replacement_without_a_terminal_or_yes_is_refused_and_changes_nothing(
    deployed: Path, cli: Cli, api_calls: ApiCalls
) -> None:
    internal = with_config(deployed, "\n[load_balancer]\ninternal = true\n")
    assert resource(plan_doc(cli, internal, code=2), "load balancer", cli_names().alb)[
        "action"
    ] == (REPLACE)
    api_calls.clear()
    result = cli("up", "-c", str(internal), code=2)
    assert "--yes" in result.output
    assert f"replace load balancer {cli_names().alb}" in result.output
    assert "nothing was changed" in result.output
    # The stack lock (an SSM parameter) is taken and released; nothing else is written.
    assert set(api_calls.mutating()) <= {"ssm.PutParameter", "ssm.DeleteParameter"}
    with pytest.raises(ClientError, match="ParameterNotFound"):
        client("ssm").get_parameter(Name=f"/mlflow-ecs/{CLI_STACK}/lock")
    assert scheme() == "internet-facing"


def test_a_replacement_with_yes_is_made_and_the_next_plan_is_clean(
    deployed: Path, cli: Cli
) -> None:
    internal = with_config(deployed, "\n[load_balancer]\ninternal = true\n")
    result = cli("up", "--yes", "-c", str(internal))
    assert "replace" in result.stderr  # the plan was shown
    assert scheme() == "internal"
    cli("plan", "-c", str(internal), code=0)


def test_up_of_a_fresh_stack_prints_no_plan_and_asks_nothing(
    moto: None, cli: Cli, cfg_file: Path
) -> None:
    result = cli("up", "-c", str(cfg_file))
    assert "Plan:" not in result.output
    assert f"Stack '{CLI_STACK}' in {REGION}:" not in result.output
    assert "Go ahead" not in result.output
    assert "--yes" not in result.output
    assert f"Stack '{CLI_STACK}' is up" in result.output


def test_a_new_artifact_location_says_the_old_one_is_kept_and_where_access_moves(
    stack: Config,
) -> None:
    n = names_of(stack)
    moved = make_config(
        {"stack": {"name": "mlflow", "tags": TAGS}, "artifacts": {"bucket": "new-artifacts-b"}}
    )
    role = one(read_only_plan(moved), "task role", n.task_role)
    assert f"from s3://{n.bucket}/mlflow/* to s3://new-artifacts-b/mlflow/*" in role.note
    assert "never deleted" in role.note


def test_status_without_leave_to_read_secret_values_still_shows_every_resource(
    deployed: Path, cli: Cli, api_calls: ApiCalls
) -> None:
    """The drift check reads the stored OAuth values to compare them; a role that may not read
    them still gets its status, with why drift was not checked."""
    api_calls.fail["secretsmanager.GetSecretValue"] = "AccessDeniedException"
    doc = json.loads(cli("status", "--json", "-c", str(deployed)).stdout)
    assert doc["healthy"] is True
    assert doc["drift"] == []
    assert "AccessDeniedException" in doc["drift_error"]
    assert all(r["present"] for r in doc["resources"])
