"""The pure renderers: task definition, IAM and bucket policies, SG rules, listeners. No AWS."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT_ID, CLIENT_SECRET, make_config

from mlflow_ecs import render
from mlflow_ecs.config import Config, Names
from mlflow_ecs.steps.secrets import generate_cookie_secret

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ALB_DNS = "mlflow-alb-1234567890.eu-west-1.elb.amazonaws.com"
DB_HOST = "mlflow-db.cluster-c0ffee.eu-west-1.rds.amazonaws.com"
DOMAIN = "mlflow.example.com"
CERT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
EXECUTION_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlflow-execution"
TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlflow-task"
DB_PASSWORD = "p@ss?w/rd#1:%x"  # every URL-hostile character the URI must survive
WITH_HTTPS = {"load_balancer": {"domain": DOMAIN, "certificate_arn": CERT}}


def secret_arn(name: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbC123"


def task_refs(names: Names) -> render.TaskRefs:
    secrets = (
        names.secret_db_password,
        names.secret_client_id,
        names.secret_client_secret,
        names.secret_cookie,
    )
    return render.TaskRefs(
        region=REGION,
        execution_role_arn=EXECUTION_ROLE,
        task_role_arn=TASK_ROLE,
        db_host=DB_HOST,
        alb_dns=ALB_DNS,
        secret_arns={name: secret_arn(name) for name in secrets},
    )


def rendered(data: dict[str, Any] | None = None) -> tuple[Config, Names, dict[str, Any]]:
    cfg = make_config(data)
    names = cfg.names(ACCOUNT, REGION)
    return cfg, names, render.task_definition(cfg, names, task_refs(names))


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in doc["containerDefinitions"] if c["name"] == name]
    assert len(found) == 1, f"expected exactly one {name} container"
    return found[0]


def environment(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("environment", [])}


def secrets_of(c: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in c.get("secrets", [])}


def mlflow_command(data: dict[str, Any] | None = None) -> str:
    _, _, doc = rendered(data)
    command = container(doc, render.MLFLOW)["command"]
    assert len(command) == 1, "sh -c takes exactly one command string"
    return str(command[0])


def server_argv(data: dict[str, Any] | None = None) -> list[str]:
    """The words of `exec mlflow server ...`, as the shell will split them."""
    _, sep, rest = mlflow_command(data).partition(" || exit 1; ")
    assert sep, "the password encoding must abort the shell when it fails"
    words = shlex.split(rest)
    assert words[:3] == ["exec", "mlflow", "server"]
    return words[3:]


def option(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} expected once in {argv}"
    return argv[argv.index(flag) + 1]


def proxy_flags(data: dict[str, Any] | None = None) -> list[str]:
    _, _, doc = rendered(data)
    return list(container(doc, render.PROXY)["command"])


def flag_values(flags: list[str], name: str) -> list[str]:
    return [f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}=")]


# --- task definition --------------------------------------------------------------------------


def test_task_definition_is_a_fargate_awsvpc_task_of_the_stack() -> None:
    _, names, doc = rendered({"mlflow": {"cpu": 2048, "memory": 5120}})
    assert doc["family"] == names.task_family == "mlflow-mlflow"
    assert doc["requiresCompatibilities"] == ["FARGATE"]
    assert doc["networkMode"] == "awsvpc"
    assert (doc["cpu"], doc["memory"]) == ("2048", "5120")
    assert doc["executionRoleArn"] == EXECUTION_ROLE
    assert doc["taskRoleArn"] == TASK_ROLE
    assert [c["name"] for c in doc["containerDefinitions"]] == ["mlflow", "oauth2-proxy"]


def test_container_images_come_from_the_config() -> None:
    _, _, doc = rendered(
        {"mlflow": {"image": "example.com/mlflow:1"}, "oauth2_proxy": {"image": "example.com/op:2"}}
    )
    assert container(doc, render.MLFLOW)["image"] == "example.com/mlflow:1"
    assert container(doc, render.PROXY)["image"] == "example.com/op:2"


def test_mlflow_runs_one_shell_string_that_encodes_the_password_then_execs_mlflow() -> None:
    _, _, doc = rendered()
    mlflow = container(doc, render.MLFLOW)
    assert mlflow["entryPoint"] == ["sh", "-c"]
    command = mlflow_command()
    assert command.startswith(f"DB_PASSWORD_URL=$({render.ENCODE_PASSWORD}) || exit 1; ")
    assert 'u.quote(os.environ["DB_PASSWORD"],safe="")' in render.ENCODE_PASSWORD
    assert command.split(" || exit 1; ", 1)[1].startswith("exec mlflow server ")


def test_mlflow_listens_on_loopback_with_the_percent_encoded_password_in_the_uri() -> None:
    argv = server_argv()
    assert option(argv, "--host") == "127.0.0.1"
    assert option(argv, "--port") == "5000"
    assert (
        option(argv, "--backend-store-uri")
        == "mysql+pymysql://${DB_USER}:${DB_PASSWORD_URL}@${DB_HOST}:${DB_PORT}/${DB_NAME}"
    )
    assert '"mysql+pymysql://${DB_USER}:${DB_PASSWORD_URL}@' in mlflow_command(), (
        "the URI must be double-quoted so the shell expands it as one word"
    )


@pytest.mark.parametrize(
    ("data", "uri"),
    [
        ({}, "s3://mlflow-artifacts-123456789012-eu-west-1/mlflow"),
        ({"artifacts": {"bucket": "my-bucket", "path": "team/runs"}}, "s3://my-bucket/team/runs"),
        ({"artifacts": {"bucket": "my-bucket", "path": ""}}, "s3://my-bucket"),
    ],
)
def test_direct_mode_lets_clients_write_to_s3_themselves(data: dict[str, Any], uri: str) -> None:
    argv = server_argv(data)
    assert "--no-serve-artifacts" in argv
    assert option(argv, "--default-artifact-root") == uri
    assert "--serve-artifacts" not in argv
    assert "--artifacts-destination" not in argv


def test_proxied_mode_serves_artifacts_through_mlflow() -> None:
    argv = server_argv({"artifacts": {"mode": "proxied", "bucket": "my-bucket", "path": "runs"}})
    assert "--serve-artifacts" in argv
    assert option(argv, "--artifacts-destination") == "s3://my-bucket/runs"
    assert "--no-serve-artifacts" not in argv
    assert "--default-artifact-root" not in argv


def test_workers_come_from_the_config_and_gunicorn_is_off_by_default() -> None:
    argv = server_argv({"mlflow": {"workers": 5}})
    assert option(argv, "--workers") == "5"
    assert "--gunicorn-opts" not in argv


@pytest.mark.parametrize(
    "opts",
    ["--timeout 120", "--timeout 120 --log-level debug", "--access-logformat '%(h)s \"%(r)s\"'"],
)
def test_gunicorn_opts_reach_mlflow_as_one_quoted_word(opts: str) -> None:
    argv = server_argv({"mlflow": {"gunicorn_opts": opts}})
    assert option(argv, "--gunicorn-opts") == opts


def search_path(bin_dir: Path) -> str:
    """PATH with the stand-in mlflow first, then this interpreter (the image has `python`)."""
    return os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])


@pytest.fixture
def fake_mlflow(tmp_path: Path) -> Path:
    """A stand-in `mlflow` that prints its pid and argv, one per line."""
    if shutil.which("python", path=search_path(tmp_path)) is None:
        pytest.skip("no `python` executable to run the password encoding")
    script = tmp_path / "mlflow"
    script.write_text('#!/bin/sh\necho "$$"\nprintf \'%s\\n\' "$@"\n')
    script.chmod(0o755)
    return tmp_path


def run_mlflow_command(
    bin_dir: Path, data: dict[str, Any] | None = None, password: str | None = DB_PASSWORD
) -> tuple[int, int, list[str]]:
    """Run the container's command with sh and the container's environment: (pid, rc, lines)."""
    _, _, doc = rendered(data)
    mlflow = container(doc, render.MLFLOW)
    env = {**environment(mlflow), "PATH": search_path(bin_dir)}
    if password is not None:
        env["DB_PASSWORD"] = password
    proc = subprocess.Popen(
        [*mlflow["entryPoint"], *mlflow["command"]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, _ = proc.communicate(timeout=30)
    return proc.pid, proc.returncode, out.splitlines()


def test_the_shell_builds_a_uri_with_the_encoded_password_and_mlflow_replaces_it(
    fake_mlflow: Path,
) -> None:
    pid, rc, lines = run_mlflow_command(fake_mlflow, {"mlflow": {"gunicorn_opts": "--timeout 9"}})
    assert rc == 0
    assert lines[0] == str(pid), "exec: mlflow must take over the shell's pid (PID 1 in ECS)"
    argv = lines[1:]
    assert argv[0] == "server"
    encoded = urllib.parse.quote(DB_PASSWORD, safe="")
    expected = f"mysql+pymysql://mlflow:{encoded}@{DB_HOST}:3306/mlflow"
    assert option(argv, "--backend-store-uri") == expected
    assert option(argv, "--gunicorn-opts") == "--timeout 9"


def test_the_shell_stops_before_mlflow_when_the_password_is_missing(fake_mlflow: Path) -> None:
    _, rc, lines = run_mlflow_command(fake_mlflow, password=None)
    assert rc != 0
    assert lines == [], "mlflow must not start without its password"


def test_secrets_come_from_the_secret_arns_given() -> None:
    _, names, doc = rendered()
    assert secrets_of(container(doc, render.MLFLOW)) == {
        "DB_PASSWORD": secret_arn(names.secret_db_password)
    }
    assert secrets_of(container(doc, render.PROXY)) == {
        "OAUTH2_PROXY_CLIENT_ID": secret_arn(names.secret_client_id),
        "OAUTH2_PROXY_CLIENT_SECRET": secret_arn(names.secret_client_secret),
        "OAUTH2_PROXY_COOKIE_SECRET": secret_arn(names.secret_cookie),
    }


@pytest.mark.parametrize(
    "data",
    [{}, WITH_HTTPS, {"artifacts": {"mode": "proxied"}, **WITH_HTTPS}],
    ids=["plain", "https", "proxied"],
)
def test_no_secret_value_appears_in_the_task_definition(data: dict[str, Any]) -> None:
    cfg, _, doc = rendered(data)
    assert (cfg.secrets.client_id, cfg.secrets.client_secret) == (CLIENT_ID, CLIENT_SECRET)
    text = json.dumps(doc) + render.to_json(doc)
    for value in (CLIENT_ID, CLIENT_SECRET, DB_PASSWORD, generate_cookie_secret()):
        assert value not in text


def test_mlflow_environment_points_at_the_database() -> None:
    _, _, doc = rendered({"database": {"name": "tracking", "username": "tracker"}})
    env = environment(container(doc, render.MLFLOW))
    assert {k: env[k] for k in ("DB_USER", "DB_HOST", "DB_PORT", "DB_NAME")} == {
        "DB_USER": "tracker",
        "DB_HOST": DB_HOST,
        "DB_PORT": "3306",
        "DB_NAME": "tracking",
    }
    assert env["AWS_DEFAULT_REGION"] == REGION
    assert "DB_PASSWORD" not in env, "the password is a secret, never plain environment"


def test_mlflow_allows_the_public_host_names_and_origins() -> None:
    _, _, doc = rendered(WITH_HTTPS)
    env = environment(container(doc, render.MLFLOW))
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert DOMAIN in hosts
    assert ALB_DNS in hosts
    origins = env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    assert f"https://{DOMAIN}" in origins


def test_without_a_domain_mlflow_allows_the_alb_name() -> None:
    _, _, doc = rendered()
    env = environment(container(doc, render.MLFLOW))
    assert ALB_DNS in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",") == [f"http://{ALB_DNS}"]


@pytest.mark.parametrize(("min_capacity", "pooled"), [(0, False), (0.5, True), (1, True)])
def test_nullpool_only_when_aurora_may_pause(min_capacity: float, pooled: bool) -> None:
    _, _, doc = rendered({"database": {"min_capacity": min_capacity}})
    env = environment(container(doc, render.MLFLOW))
    if pooled:
        assert "MLFLOW_SQLALCHEMYSTORE_POOLCLASS" not in env
    else:
        assert env["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] == "NullPool"


def test_only_the_proxy_port_is_exposed() -> None:
    _, _, doc = rendered({"oauth2_proxy": {"port": 4280}})
    assert not container(doc, render.MLFLOW).get("portMappings")
    mappings = container(doc, render.PROXY)["portMappings"]
    assert [(m["containerPort"], m.get("protocol")) for m in mappings] == [(4280, "tcp")]


@pytest.mark.parametrize("name", [render.MLFLOW, render.PROXY])
def test_both_containers_log_to_the_stack_log_group(name: str) -> None:
    _, names, doc = rendered()
    logs = container(doc, name)["logConfiguration"]
    assert logs == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": names.log_group,
            "awslogs-region": REGION,
            "awslogs-stream-prefix": name,
        },
    }


def test_mlflow_has_a_stop_timeout_and_the_proxy_waits_for_a_healthy_mlflow() -> None:
    _, _, doc = rendered()
    stop = container(doc, render.MLFLOW)["stopTimeout"]
    assert isinstance(stop, int)
    assert 10 <= stop <= 120  # Fargate's bound; MLflow needs several seconds to exit
    assert container(doc, render.PROXY)["dependsOn"] == [
        {"containerName": "mlflow", "condition": "HEALTHY"}
    ]


def test_mlflow_health_check_uses_python_not_curl() -> None:
    _, _, doc = rendered({"mlflow": {"port": 5001}})
    kind, command = container(doc, render.MLFLOW)["healthCheck"]["command"]
    assert kind == "CMD-SHELL"
    assert "urllib.request" in command
    assert "http://127.0.0.1:5001/health" in command
    assert "curl" not in command


# --- oauth2-proxy flags -----------------------------------------------------------------------


def test_proxy_listens_on_all_interfaces_and_forwards_to_loopback_mlflow() -> None:
    flags = proxy_flags({"oauth2_proxy": {"port": 4280}, "mlflow": {"port": 5001}})
    assert flag_values(flags, "http-address") == ["0.0.0.0:4280"]
    assert flag_values(flags, "upstream") == ["http://127.0.0.1:5001/"]


def test_proxy_default_flags() -> None:
    flags = proxy_flags()
    assert flag_values(flags, "http-address") == ["0.0.0.0:4180"]
    assert flag_values(flags, "upstream") == ["http://127.0.0.1:5000/"]
    assert flag_values(flags, "reverse-proxy") == ["true"]
    assert flag_values(flags, "provider") == ["google"]
    assert flag_values(flags, "email-domain") == ["*"]
    assert flag_values(flags, "skip-auth-route") == ["GET=^/health$"]
    assert flag_values(flags, "skip-jwt-bearer-tokens") == ["true"]
    assert flag_values(flags, "extra-jwt-issuers") == []
    assert flag_values(flags, "cookie-secure") == ["false"]
    assert flag_values(flags, "redirect-url") == []
    assert flag_values(flags, "upstream-timeout") == []


GCLOUD_ISSUER = "https://accounts.google.com=32555940559.apps.googleusercontent.com"


@pytest.mark.parametrize(
    ("data", "flag", "values"),
    [
        ({"oauth2_proxy": {"provider": "github"}}, "provider", ["github"]),
        (
            {"oauth2_proxy": {"email_domains": ["example.com", "example.org"]}},
            "email-domain",
            ["example.com", "example.org"],
        ),
        (
            {"oauth2_proxy": {"extra_jwt_issuers": [GCLOUD_ISSUER, "https://idp.example=aud"]}},
            "extra-jwt-issuers",
            [GCLOUD_ISSUER, "https://idp.example=aud"],
        ),
        (WITH_HTTPS, "redirect-url", [f"https://{DOMAIN}/oauth2/callback"]),
        (WITH_HTTPS, "cookie-secure", ["true"]),
        ({"load_balancer": {"certificate_arn": CERT}}, "cookie-secure", ["true"]),
        ({"load_balancer": {"certificate_arn": CERT}}, "redirect-url", []),
        ({"artifacts": {"mode": "direct"}}, "upstream-timeout", []),
    ],
    ids=[
        "provider",
        "email-domains",
        "extra-jwt-issuers",
        "redirect-with-domain",
        "cookie-secure-with-domain",
        "cookie-secure-with-cert",
        "no-redirect-without-domain",
        "no-upstream-timeout-direct",
    ],
)
def test_proxy_flags_follow_the_config(data: dict[str, Any], flag: str, values: list[str]) -> None:
    assert flag_values(proxy_flags(data), flag) == values


def test_proxied_mode_raises_the_proxy_upstream_timeout_to_the_alb_idle_timeout() -> None:
    data = {"artifacts": {"mode": "proxied"}}
    (timeout,) = flag_values(proxy_flags(data), "upstream-timeout")
    assert timeout.endswith("s")
    assert int(timeout[:-1]) >= render.idle_timeout(make_config(data)) >= 300


# --- IAM --------------------------------------------------------------------------------------


def test_execution_policy_reads_exactly_the_four_stack_secrets() -> None:
    names = make_config().names(ACCOUNT, REGION)
    arns = list(task_refs(names).secret_arns.values())
    doc = render.execution_policy(list(reversed(arns)))
    (statement,) = doc["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == sorted(arns)
    assert len(set(statement["Resource"])) == 4


@pytest.mark.parametrize(
    ("path", "objects", "prefixes"),
    [
        ("mlflow", "arn:aws:s3:::bkt/mlflow/*", ["mlflow", "mlflow/*"]),
        ("team/runs", "arn:aws:s3:::bkt/team/runs/*", ["team/runs", "team/runs/*"]),
        ("", "arn:aws:s3:::bkt/*", ["*"]),
    ],
)
def test_task_policy_limits_s3_to_the_artifact_prefix(
    path: str, objects: str, prefixes: list[str]
) -> None:
    doc = render.task_policy("bkt", path)
    by_action = {json.dumps(s["Action"]): s for s in doc["Statement"]}
    assert set(by_action) == {
        '"s3:ListBucket"',
        '["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]',
    }
    listing = by_action['"s3:ListBucket"']
    assert listing["Resource"] == "arn:aws:s3:::bkt"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": prefixes}}
    rw = by_action['["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]']
    assert rw["Resource"] == objects
    assert all(s["Effect"] == "Allow" for s in doc["Statement"])


def test_task_roles_are_assumable_by_ecs_tasks_of_this_account_only() -> None:
    doc = render.ecs_tasks_trust_policy(ACCOUNT)
    (statement,) = doc["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}


# --- S3 ---------------------------------------------------------------------------------------


def test_bucket_policy_denies_every_request_without_tls() -> None:
    (statement,) = render.bucket_policy("bkt")["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert sorted(statement["Resource"]) == ["arn:aws:s3:::bkt", "arn:aws:s3:::bkt/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# --- security groups --------------------------------------------------------------------------

CIDRS = ["10.0.0.0/8", "203.0.113.0/24"]


@pytest.mark.parametrize(
    ("load_balancer", "ports"),
    [({}, [80]), ({"certificate_arn": CERT}, [80, 443])],
    ids=["http-only", "https"],
)
def test_alb_rules_open_listener_ports_to_each_allowed_cidr(
    load_balancer: dict[str, str], ports: list[int]
) -> None:
    cfg = make_config({"network": {"allowed_cidrs": CIDRS}, "load_balancer": load_balancer})
    assert render.alb_rules(cfg) == {("tcp", p, p, c) for p in ports for c in CIDRS}


def test_tasks_accept_the_proxy_port_from_the_alb_and_db_from_the_tasks() -> None:
    cfg = make_config({"oauth2_proxy": {"port": 4280}})
    assert render.task_rules(cfg, "sg-alb") == {("tcp", 4280, 4280, "sg-alb")}
    assert render.db_rules("sg-tasks") == {("tcp", 3306, 3306, "sg-tasks")}


def test_ip_permissions_use_group_pairs_for_groups_and_ranges_for_cidrs() -> None:
    perms = render.ip_permissions({("tcp", 443, 443, "1.2.3.0/24"), ("tcp", 4180, 4180, "sg-0abc")})
    assert perms == [
        {
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "IpRanges": [{"CidrIp": "1.2.3.0/24"}],
        },
        {
            "IpProtocol": "tcp",
            "FromPort": 4180,
            "ToPort": 4180,
            "UserIdGroupPairs": [{"GroupId": "sg-0abc"}],
        },
    ]


@pytest.mark.parametrize(
    "rules",
    [
        set(),
        {("tcp", 80, 80, "0.0.0.0/0")},
        {("tcp", 80, 80, "10.0.0.0/8"), ("tcp", 443, 443, "10.0.0.0/8"), ("tcp", 80, 80, "sg-1")},
    ],
)
def test_rules_of_inverts_ip_permissions(rules: set[render.Rule]) -> None:
    assert render.rules_of(render.ip_permissions(rules)) == rules


def test_rules_of_reads_grouped_permissions_as_aws_returns_them() -> None:
    described = [
        {
            "IpProtocol": "tcp",
            "FromPort": 80,
            "ToPort": 80,
            "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "192.0.2.0/24"}],
            "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
            "UserIdGroupPairs": [{"GroupId": "sg-1", "UserId": ACCOUNT}],
        }
    ]
    assert render.rules_of(described) == {
        ("tcp", 80, 80, "10.0.0.0/8"),
        ("tcp", 80, 80, "192.0.2.0/24"),
        ("tcp", 80, 80, "::/0"),
        ("tcp", 80, 80, "sg-1"),
    }


# --- load balancer ----------------------------------------------------------------------------

TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/mlflow-proxy/abc"


def test_without_a_certificate_one_http_listener_forwards() -> None:
    assert render.listeners(make_config(), TG) == {
        80: {
            "Protocol": "HTTP",
            "Port": 80,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": TG}],
        }
    }


def test_with_a_certificate_http_redirects_to_https_which_forwards() -> None:
    found = render.listeners(make_config({"load_balancer": {"certificate_arn": CERT}}), TG)
    assert set(found) == {80, 443}
    http, https = found[80], found[443]
    assert (http["Protocol"], http["Port"]) == ("HTTP", 80)
    assert http["DefaultActions"] == [
        {
            "Type": "redirect",
            "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
        }
    ]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["Certificates"] == [{"CertificateArn": CERT}]
    assert https["DefaultActions"] == [{"Type": "forward", "TargetGroupArn": TG}]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")


@pytest.mark.parametrize(
    ("load_balancer", "alb_dns", "url"),
    [
        ({"domain": DOMAIN, "certificate_arn": CERT}, ALB_DNS, f"https://{DOMAIN}"),
        ({"certificate_arn": CERT}, ALB_DNS, f"https://{ALB_DNS}"),
        ({}, ALB_DNS, f"http://{ALB_DNS}"),
        ({}, "", ""),
    ],
    ids=["domain", "certificate-only", "plain", "no-alb-yet"],
)
def test_public_url(load_balancer: dict[str, str], alb_dns: str, url: str) -> None:
    assert render.public_url(make_config({"load_balancer": load_balancer}), alb_dns) == url


@pytest.mark.parametrize(
    ("mode", "configured", "expected"),
    [
        ("direct", 60, 60),
        ("direct", 1200, 1200),
        ("proxied", 60, render.UPLOAD_TIMEOUT_SECONDS),
        ("proxied", 3600, 3600),
    ],
)
def test_idle_timeout_is_raised_for_uploads_in_proxied_mode(
    mode: str, configured: int, expected: int
) -> None:
    cfg = make_config({"artifacts": {"mode": mode}, "load_balancer": {"idle_timeout": configured}})
    assert render.idle_timeout(cfg) == expected
    assert render.UPLOAD_TIMEOUT_SECONDS > 60


# --- secrets ----------------------------------------------------------------------------------


def test_cookie_secret_decodes_to_32_random_bytes() -> None:
    first, second = generate_cookie_secret(), generate_cookie_secret()
    assert len(base64.urlsafe_b64decode(first)) == 32
    assert len(base64.urlsafe_b64decode(second)) == 32
    assert first != second


def test_artifact_location_reads_back_what_task_policy_grants() -> None:
    assert render.artifact_location(render.task_policy("b", "runs")) == "s3://b/runs/*"
    assert render.artifact_location(render.task_policy("b", "")) == "s3://b/*"
    assert render.artifact_location({"Statement": [{"Sid": "Other"}]}) == ""
    assert render.artifact_location(None) == ""
