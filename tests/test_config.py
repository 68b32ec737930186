"""Config validation: defaults, every problem named by its key path, the environment, names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, ENV, make_config

from mlflow_ecs import config
from mlflow_ecs.errors import ConfigError

ACCOUNT = "123456789012"
REGION = "eu-west-1"
CERT_US = f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/0b1c2d3e-4f50"
CERT_EU = f"arn:aws:acm:eu-west-1:{ACCOUNT}:certificate/0b1c2d3e-4f50"
VPC = "vpc-0123456789abcdef0"
SUBNETS = ["subnet-0123abcd", "subnet-0123abce"]


def problems_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        make_config(data, env)
    return caught.value.problems


def test_defaults_when_only_the_stack_name_is_given() -> None:
    cfg = make_config()
    assert cfg.stack == config.Stack(name="mlflow", region="", tags={})
    assert cfg.tags == {"mlflow-ecs:stack": "mlflow"}
    n = cfg.network
    assert (n.vpc_id, n.public_subnet_ids, n.private_subnet_ids) == ("", (), ())
    assert (n.cidr, n.allowed_cidrs, n.task_subnets) == ("10.42.0.0/16", ("0.0.0.0/0",), "public")
    a = cfg.artifacts
    assert (a.bucket, a.path, a.mode) == ("", "mlflow", "direct")
    d = cfg.database
    assert d.engine_version.startswith("8.0.mysql_aurora.3.")
    assert (d.name, d.username) == ("mlflow", "mlflow")
    assert (d.min_capacity, d.max_capacity) == (0.5, 2.0)
    assert (d.deletion_protection, d.backup_retention_days) == (False, 7)
    m = cfg.mlflow
    assert m.image.startswith("ghcr.io/mlflow/mlflow:v3.") and m.image.endswith("-full")
    assert (m.port, m.cpu, m.memory, m.workers, m.gunicorn_opts) == (5000, 1024, 2048, 2, "")
    p = cfg.oauth2_proxy
    assert p.image.startswith("quay.io/oauth2-proxy/oauth2-proxy:v7.")
    assert (p.port, p.provider, p.email_domains, p.extra_jwt_issuers) == (4180, "google", (), ())
    lb = cfg.load_balancer
    assert (lb.certificate_arn, lb.domain, lb.internal, lb.idle_timeout) == ("", "", False, 60)
    s = cfg.service
    assert (s.desired_count, s.log_retention_days, s.health_check_grace_seconds) == (1, 30, 120)


def test_given_values_replace_the_defaults_and_lists_become_tuples() -> None:
    cfg = make_config(
        {
            "stack": {"name": "team-a", "region": REGION, "tags": {"team": "ml"}},
            "network": {"vpc_id": VPC, "public_subnet_ids": SUBNETS, "private_subnet_ids": SUBNETS},
            "database": {"min_capacity": 0, "max_capacity": 8},
            "mlflow": {"cpu": 2048, "memory": 8192},
            "load_balancer": {"certificate_arn": CERT_EU, "domain": "mlflow.example.com"},
        }
    )
    assert (cfg.stack.name, cfg.stack.region) == ("team-a", REGION)
    assert cfg.tags == {"team": "ml", "mlflow-ecs:stack": "team-a"}
    assert cfg.network.public_subnet_ids == tuple(SUBNETS)
    assert (cfg.database.min_capacity, cfg.database.max_capacity) == (0, 8)
    assert (cfg.mlflow.cpu, cfg.mlflow.memory) == (2048, 8192)
    assert cfg.load_balancer.domain == "mlflow.example.com"


# Each case: (data, env or None for conftest's ENV, key path, a fragment naming the bad value).
INVALID: dict[str, tuple[dict[str, Any], dict[str, str] | None, str, str]] = {
    # unknown keys and sections
    "typo-key": ({"database": {"max_capacty": 4}}, None, "database -> max_capacty", "unknown key"),
    "typo-section": ({"databse": {"name": "x"}}, None, "databse", "unknown section"),
    "section-not-table": ({"mlflow": "big"}, None, "mlflow", "'big' must be a table"),
    # wrong types
    "str-for-int": (
        {"mlflow": {"cpu": "1024"}},
        None,
        "mlflow -> cpu",
        "'1024' must be an integer",
    ),
    "float-for-int": ({"mlflow": {"workers": 2.5}}, None, "mlflow -> workers", "2.5 must be"),
    "int-for-bool": (
        {"database": {"deletion_protection": 1}},
        None,
        "database -> deletion_protection",
        "1 must be true/false",
    ),
    "true-for-number": (
        {"database": {"max_capacity": True}},
        None,
        "database -> max_capacity",
        "True must be a number",
    ),
    "str-for-list": (
        {"network": {"allowed_cidrs": "0.0.0.0/0"}},
        None,
        "network -> allowed_cidrs",
        "'0.0.0.0/0' must be a list",
    ),
    "int-in-list": ({"network": {"allowed_cidrs": [10]}}, None, "network -> allowed_cidrs", "[10]"),
    # stack
    "name-missing": ({"stack": {}}, None, "stack -> name", "missing"),
    "name-uppercase": ({"stack": {"name": "MLflow"}}, None, "stack -> name", "'MLflow'"),
    "name-too-short": ({"stack": {"name": "ml"}}, None, "stack -> name", "'ml'"),
    "name-too-long": ({"stack": {"name": "m" * 25}}, None, "stack -> name", "'" + "m" * 25),
    "name-digit-first": ({"stack": {"name": "1mlflow"}}, None, "stack -> name", "'1mlflow'"),
    "name-trailing-hyphen": ({"stack": {"name": "mlflow-"}}, None, "stack -> name", "'mlflow-'"),
    "name-double-hyphen": ({"stack": {"name": "ml--flow"}}, None, "stack -> name", "'ml--flow'"),
    "name-underscore": ({"stack": {"name": "ml_flow"}}, None, "stack -> name", "'ml_flow'"),
    "region-unknown": (
        {"stack": {"name": "mlflow", "region": "eu-middle-9"}},
        None,
        "stack -> region",
        "'eu-middle-9'",
    ),
    "region-malformed": (
        {"stack": {"name": "mlflow", "region": "Ireland"}},
        None,
        "stack -> region",
        "'Ireland'",
    ),
    "env-region-unknown": ({}, {**ENV, "AWS_REGION": "eu-middle-9"}, "AWS_REGION", "'eu-middle-9'"),
    "env-default-region-bad": (
        {},
        {**ENV, "AWS_DEFAULT_REGION": "mars-1"},
        "AWS_DEFAULT_REGION",
        "'mars-1'",
    ),
    "tag-aws-prefix": (
        {"stack": {"name": "mlflow", "tags": {"aws:owner": "me"}}},
        None,
        "stack -> tags",
        "'aws:owner'",
    ),
    "tag-owner-key": (
        {"stack": {"name": "mlflow", "tags": {"mlflow-ecs:stack": "other"}}},
        None,
        "stack -> tags",
        "'mlflow-ecs:stack'",
    ),
    "tag-int-value": (
        {"stack": {"name": "mlflow", "tags": {"team": 1}}},
        None,
        "stack -> tags",
        "'team' has a int value",
    ),
    # Fargate sizes
    "cpu-not-a-size": ({"mlflow": {"cpu": 3000}}, None, "mlflow -> cpu", "3000"),
    "memory-too-big-for-cpu": (
        {"mlflow": {"cpu": 256, "memory": 4096}},
        None,
        "mlflow -> memory",
        "4096 MiB does not fit cpu 256",
    ),
    "memory-too-small-for-cpu": (
        {"mlflow": {"cpu": 4096, "memory": 4096}},
        None,
        "mlflow -> memory",
        "4096 MiB does not fit cpu 4096",
    ),
    "memory-off-step": (
        {"mlflow": {"cpu": 8192, "memory": 17408}},
        None,
        "mlflow -> memory",
        "17408",
    ),
    # Aurora capacity
    "capacity-off-grid": (
        {"database": {"min_capacity": 0.3}},
        None,
        "database -> min_capacity",
        "0.3",
    ),
    "capacity-negative": (
        {"database": {"min_capacity": -1}},
        None,
        "database -> min_capacity",
        "-1",
    ),
    "capacity-above-256": (
        {"database": {"max_capacity": 300}},
        None,
        "database -> max_capacity",
        "300",
    ),
    "min-above-max": (
        {"database": {"min_capacity": 4, "max_capacity": 2}},
        None,
        "database -> min_capacity",
        "4 is above max_capacity 2",
    ),
    "max-below-1": (
        {"database": {"min_capacity": 0, "max_capacity": 0.5}},
        None,
        "database -> max_capacity",
        "0.5 is below 1",
    ),
    "engine-not-mysql-3": (
        {"database": {"engine_version": "5.7.mysql_aurora.2.11.2"}},
        None,
        "database -> engine_version",
        "'5.7.mysql_aurora.2.11.2'",
    ),
    "db-user-reserved": (
        {"database": {"username": "admin"}},
        None,
        "database -> username",
        "'admin'",
    ),
    "backup-retention-0": (
        {"database": {"backup_retention_days": 0}},
        None,
        "database -> backup_retention_days",
        "0 is out of range",
    ),
    # network
    "allowed-cidr-host-bits": (
        {"network": {"allowed_cidrs": ["10.0.0.1/8"]}},
        None,
        "network -> allowed_cidrs",
        "'10.0.0.1/8'",
    ),
    "allowed-cidr-garbage": (
        {"network": {"allowed_cidrs": ["0.0.0.0/0", "office"]}},
        None,
        "network -> allowed_cidrs",
        "'office'",
    ),
    "vpc-cidr-slash-8": ({"network": {"cidr": "10.0.0.0/8"}}, None, "network -> cidr", "/8"),
    "vpc-cidr-invalid": ({"network": {"cidr": "300.0.0.0/16"}}, None, "network -> cidr", "'300.0"),
    "task-subnets-mode": (
        {"network": {"task_subnets": "dmz"}},
        None,
        "network -> task_subnets",
        "'dmz'",
    ),
    "vpc-id-malformed": (
        {"network": {"vpc_id": "my-vpc", "public_subnet_ids": SUBNETS}},
        None,
        "network -> vpc_id",
        "'my-vpc'",
    ),
    "vpc-id-without-subnets": ({"network": {"vpc_id": VPC}}, None, "network -> vpc_id", repr(VPC)),
    "subnets-without-vpc-id": (
        {"network": {"public_subnet_ids": SUBNETS}},
        None,
        "network -> vpc_id",
        "missing",
    ),
    "one-public-subnet": (
        {
            "network": {
                "vpc_id": VPC,
                "public_subnet_ids": SUBNETS[:1],
                "private_subnet_ids": SUBNETS,
            }
        },
        None,
        "network -> public_subnet_ids",
        repr(SUBNETS[:1]),
    ),
    "same-private-subnet-twice": (
        {
            "network": {
                "vpc_id": VPC,
                "public_subnet_ids": SUBNETS,
                "private_subnet_ids": SUBNETS[:1] * 2,
            }
        },
        None,
        "network -> private_subnet_ids",
        repr(SUBNETS[:1] * 2),
    ),
    "subnet-id-malformed": (
        {"network": {"public_subnet_ids": ["subnet-xyz"]}},
        None,
        "network -> public_subnet_ids",
        "'subnet-xyz'",
    ),
    # artifacts
    "bucket-uppercase": (
        {"artifacts": {"bucket": "My-Bucket"}},
        None,
        "artifacts -> bucket",
        "'My-Bucket'",
    ),
    "bucket-too-short": ({"artifacts": {"bucket": "ab"}}, None, "artifacts -> bucket", "'ab'"),
    "bucket-too-long": ({"artifacts": {"bucket": "b" * 64}}, None, "artifacts -> bucket", "'bbbb"),
    "bucket-double-dot": (
        {"artifacts": {"bucket": "my..bucket"}},
        None,
        "artifacts -> bucket",
        "'my..bucket'",
    ),
    "bucket-ip-like": (
        {"artifacts": {"bucket": "192.168.1.1"}},
        None,
        "artifacts -> bucket",
        "'192.168.1.1'",
    ),
    "bucket-xn-prefix": (
        {"artifacts": {"bucket": "xn--bucket"}},
        None,
        "artifacts -> bucket",
        "'xn--bucket'",
    ),
    "bucket-s3alias-suffix": (
        {"artifacts": {"bucket": "my-bucket-s3alias"}},
        None,
        "artifacts -> bucket",
        "'my-bucket-s3alias'",
    ),
    "bucket-trailing-hyphen": (
        {"artifacts": {"bucket": "bucket-"}},
        None,
        "artifacts -> bucket",
        "'bucket-'",
    ),
    "path-leading-slash": (
        {"artifacts": {"path": "/mlflow"}},
        None,
        "artifacts -> path",
        "'/mlflow'",
    ),
    "mode-unknown": ({"artifacts": {"mode": "s3"}}, None, "artifacts -> mode", "'s3'"),
    # mlflow / oauth2-proxy
    "workers-zero": ({"mlflow": {"workers": 0}}, None, "mlflow -> workers", "0 is out of range"),
    "image-with-space": (
        {"mlflow": {"image": "mlflow latest"}},
        None,
        "mlflow -> image",
        "'mlflow latest'",
    ),
    "proxy-port-privileged": ({"oauth2_proxy": {"port": 80}}, None, "oauth2_proxy -> port", "80"),
    "ports-clash": ({"oauth2_proxy": {"port": 5000}}, None, "oauth2_proxy -> port", "5000"),
    "provider-unknown": (
        {"oauth2_proxy": {"provider": "okta"}},
        None,
        "oauth2_proxy -> provider",
        "'okta'",
    ),
    "email-domain-with-at": (
        {"oauth2_proxy": {"email_domains": ["@example.com"]}},
        None,
        "oauth2_proxy -> email_domains",
        "'@example.com'",
    ),
    "email-domain-wildcard-part": (
        {"oauth2_proxy": {"email_domains": ["*.example.com"]}},
        None,
        "oauth2_proxy -> email_domains",
        "'*.example.com'",
    ),
    "issuer-not-https": (
        {"oauth2_proxy": {"extra_jwt_issuers": ["accounts.google.com=abc"]}},
        None,
        "oauth2_proxy -> extra_jwt_issuers",
        "'accounts.google.com=abc'",
    ),
    "issuer-without-audience": (
        {"oauth2_proxy": {"extra_jwt_issuers": ["https://accounts.google.com"]}},
        None,
        "oauth2_proxy -> extra_jwt_issuers",
        "'https://accounts.google.com'",
    ),
    # load balancer / service
    "certificate-other-region": (
        {
            "stack": {"name": "mlflow", "region": REGION},
            "load_balancer": {"certificate_arn": CERT_US},
        },
        None,
        "load_balancer -> certificate_arn",
        "the certificate is in us-east-1 but the stack is in eu-west-1",
    ),
    "certificate-not-acm": (
        {"load_balancer": {"certificate_arn": "arn:aws:iam::123456789012:server-certificate/x"}},
        None,
        "load_balancer -> certificate_arn",
        "'arn:aws:iam::123456789012:server-certificate/x'",
    ),
    "domain-without-certificate": (
        {"load_balancer": {"domain": "mlflow.example.com"}},
        None,
        "load_balancer -> certificate_arn",
        "'mlflow.example.com'",
    ),
    "domain-malformed": (
        {"load_balancer": {"domain": "https://mlflow.example.com", "certificate_arn": CERT_EU}},
        None,
        "load_balancer -> domain",
        "'https://mlflow.example.com'",
    ),
    "idle-timeout-zero": (
        {"load_balancer": {"idle_timeout": 0}},
        None,
        "load_balancer -> idle_timeout",
        "0 is out of range",
    ),
    "log-retention-2": (
        {"service": {"log_retention_days": 2}},
        None,
        "service -> log_retention_days",
        "2 is not a retention",
    ),
    "desired-count-negative": (
        {"service": {"desired_count": -1}},
        None,
        "service -> desired_count",
        "-1 is out of range",
    ),
}


@pytest.mark.parametrize(("data", "env", "where", "bad"), INVALID.values(), ids=INVALID.keys())
def test_invalid_config_names_key_path_and_value(
    data: dict[str, Any], env: dict[str, str] | None, where: str, bad: str
) -> None:
    problems = problems_of(data, env)
    named = [p for p in problems if p.startswith(f"{where}:")]
    assert named, f"no problem names {where!r}: {problems}"
    assert any(bad in p for p in named), f"{where!r} does not show {bad!r}: {named}"


def test_unknown_key_lists_the_known_keys() -> None:
    (problem,) = problems_of({"database": {"max_capacty": 4}})
    assert "max_capacity" in problem


def test_valid_edge_values_are_accepted() -> None:
    cfg = make_config(
        {
            "stack": {"name": "a" * 24, "region": "us-east-1"},
            "network": {"cidr": "10.0.0.0/24", "allowed_cidrs": ["192.0.2.7/32"]},
            "artifacts": {"bucket": "a.b-c", "path": ""},
            "database": {"min_capacity": 0, "max_capacity": 256},
            "mlflow": {"cpu": 256, "memory": 512},
            "oauth2_proxy": {"email_domains": ["*"]},
            "service": {"log_retention_days": 3653, "desired_count": 0},
        }
    )
    assert (cfg.database.min_capacity, cfg.database.max_capacity) == (0, 256)
    assert cfg.artifacts.bucket == "a.b-c"


def test_section_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(
            {
                "stack": {"name": "Bad Name"},
                "mlflow": {"cpu": "x", "workers": 0},
                "database": {"max_capacty": 1},
                "artifacts": {"mode": "s3"},
                "stak": {},
            }
        )
    err = caught.value
    where = sorted(p.split(":", 1)[0] for p in err.problems)
    assert where == sorted(
        [
            "stack -> name",
            "mlflow -> cpu",
            "mlflow -> workers",
            "database -> max_capacty",
            "artifacts -> mode",
            "stak",
        ]
    )
    assert "6 problems" in err.message
    assert all(f"  - {p}" in err.message for p in err.problems)


def test_cross_field_problems_are_reported_together() -> None:
    problems = problems_of(
        {
            "mlflow": {"cpu": 256, "memory": 4096},
            "database": {"min_capacity": 4, "max_capacity": 2},
            "load_balancer": {"domain": "mlflow.example.com"},
        },
        {**ENV, "AWS_REGION": "eu-middle-9"},
    )
    assert sorted(p.split(":", 1)[0] for p in problems) == [
        "AWS_REGION",
        "database -> min_capacity",
        "load_balancer -> certificate_arn",
        "mlflow -> memory",
    ]


def test_stack_region_wins_over_a_bad_environment_region() -> None:
    cfg = make_config({"stack": {"name": "mlflow", "region": REGION}}, {"AWS_REGION": "mars-1"})
    assert cfg.stack.region == REGION


# --- loading files ----------------------------------------------------------------------------


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config.load(path, ENV)
    return caught.value


def test_load_reads_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "mlflow-ecs.toml"
    path.write_text('[stack]\nname = "team-a"\n\n[mlflow]\nworkers = 4\n', encoding="utf-8")
    cfg = config.load(path, ENV)
    assert (cfg.stack.name, cfg.mlflow.workers, cfg.source) == ("team-a", 4, str(path))


def test_load_names_the_file_in_its_validation_problems(tmp_path: Path) -> None:
    path = tmp_path / "mlflow-ecs.toml"
    path.write_text('[stack]\nname = "X"\n', encoding="utf-8")
    err = load_error(path)
    assert err.message.startswith(f"{path}: 1 problem:")
    assert err.problems[0].startswith("stack -> name: 'X'")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        (b"[stack\nname = mlflow\n", "is not valid TOML"),
        (b"name = = 'x'\n", "is not valid TOML"),
        (b'[stack]\nname = "ml\xff\xfeflow"\n', "cannot be read"),
    ],
    ids=["missing", "unclosed-table", "not-toml", "not-utf8"],
)
def test_load_errors_name_the_path(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "mlflow-ecs.toml"
    if content is not None:
        path.write_bytes(content)
    err = load_error(path)
    assert err.message.startswith(f"{path}: ")
    (problem,) = err.problems
    assert problem.startswith(says)


def test_config_path_prefers_the_flag_then_the_environment() -> None:
    env = {config.CONFIG_ENV: "/etc/from-env.toml"}
    assert config.config_path("given.toml", env) == Path("given.toml")
    assert config.config_path(None, env) == Path("/etc/from-env.toml")
    assert config.config_path(None, {}) == Path(config.DEFAULT_CONFIG_FILE)


# --- secrets from the environment -------------------------------------------------------------


def test_oauth_client_comes_from_the_environment_into_secrets() -> None:
    cfg = make_config(env=ENV)
    assert cfg.secrets.client_id == CLIENT_ID
    assert cfg.secrets.client_secret == CLIENT_SECRET


def test_client_id_in_the_config_wins_over_the_environment() -> None:
    cfg = make_config({"oauth2_proxy": {"client_id": "from-config"}}, env=ENV)
    assert cfg.secrets.client_id == "from-config"
    assert cfg.secrets.client_secret == CLIENT_SECRET


def test_without_the_environment_the_secrets_are_empty() -> None:
    cfg = make_config(env={})
    assert (cfg.secrets.client_id, cfg.secrets.client_secret) == ("", "")


def test_repr_never_shows_the_secrets() -> None:
    cfg = make_config(env=ENV)
    for text in (repr(cfg), str(cfg), repr(cfg.secrets)):
        assert CLIENT_SECRET not in text
        assert CLIENT_ID not in text


# --- names --------------------------------------------------------------------------------------


def test_names_derive_from_the_stack_name() -> None:
    names = make_config({"stack": {"name": "team-a"}}).names(ACCOUNT, REGION)
    assert names.stack == "team-a"
    assert names.bucket == f"team-a-artifacts-{ACCOUNT}-{REGION}"
    assert (names.sg_alb, names.sg_tasks, names.sg_db) == (
        "team-a-alb",
        "team-a-tasks",
        "team-a-db",
    )
    assert names.log_group == "/mlflow-ecs/team-a"
    assert (names.execution_role, names.task_role) == ("team-a-execution", "team-a-task")
    assert (names.ecs_cluster, names.task_family) == ("team-a", "team-a-mlflow")
    assert (names.db_cluster, names.db_instance) == ("team-a-db", "team-a-db-writer")
    assert names.snapshot_prefix.startswith("team-a-")
    secrets = [
        names.secret_db_password,
        names.secret_client_id,
        names.secret_client_secret,
        names.secret_cookie,
    ]
    assert all(s.startswith("team-a/") for s in secrets)
    assert len(set(secrets)) == 4


def test_a_given_bucket_is_used_as_is() -> None:
    cfg = make_config({"stack": {"name": "team-a"}, "artifacts": {"bucket": "shared.ml-bucket"}})
    assert cfg.names(ACCOUNT, REGION).bucket == "shared.ml-bucket"


def test_two_stacks_share_no_name_but_the_in_cluster_service() -> None:
    a = vars(make_config({"stack": {"name": "team-a"}}).names(ACCOUNT, REGION))
    b = vars(make_config({"stack": {"name": "team-b"}}).names(ACCOUNT, REGION))
    shared = {k for k in a if a[k] == b[k]}
    assert shared == {"service"}  # an ECS service name is scoped by its (per-stack) cluster


@pytest.mark.parametrize("region", ["eu-west-1", "ap-southeast-4", "us-gov-west-1"])
def test_a_derived_bucket_is_a_valid_name_even_for_the_longest_stack_name(region: str) -> None:
    names = make_config({"stack": {"name": "a" * 24}}).names(ACCOUNT, region)
    assert config.bucket_name_problem(names.bucket) is None
