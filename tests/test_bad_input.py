"""Bad input: invalid configs and environments, table-driven, through the CLI.

Every case exits 2 (config or usage) or 1 (AWS), names the problem (its key path or variable)
and the fix, and makes no mutating AWS call: config errors make no AWS call at all. The
in-process runs have no moto and an endpoint where nothing listens (with one attempt), so a
call that slipped through could not reach anything either; the API calls are counted at
botocore's client. Cases where the process environment matters also run as the installed
script in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from conftest import ENV, READ_PREFIXES
from test_e2e import console_script
from typer.testing import CliRunner

from mlflow_ecs import aws as awsmod
from mlflow_ecs.cli import app

STACK = '[stack]\nname = "badin"\n'
OTHER_REGION_CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-1234"
NO_CALL, READS_ONLY = "none", "reads"


@dataclass(frozen=True)
class Case:
    id: str
    config: str = ""  # TOML after the [stack] name line (or the whole file with whole=True)
    expect: tuple[str, ...] = ()  # the problem (key path or variable) and the fix
    code: int = 2
    args: tuple[str, ...] = ()  # before the command
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    file: str = "toml"  # toml | bad-utf8 | dir | missing
    whole: bool = False
    calls: str = NO_CALL
    command: tuple[str, ...] = ("up",)
    subprocess: bool = False  # also through the installed script


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


NO_CREDENTIALS = {"AWS_EC2_METADATA_DISABLED": "true"}
UNSET_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)

CASES = [
    # --- missing or mistyped keys -------------------------------------------------------------
    Case(
        "missing-stack-name",
        "[stack]\nregion = 'eu-west-1'\n",
        ("stack -> name: missing", "name = 'mlflow'"),
        whole=True,
    ),
    Case(
        "mistyped-key",
        "[service]\ndesird_count = 2\n",
        ("service -> desird_count: unknown key", "did you mean", "desired_count"),
    ),
    Case(
        "unknown-section",
        "[databse]\nmax_capacity = 4\n",
        ("databse: unknown section", "known sections", "database"),
    ),
    Case(
        "section-not-a-table",
        'load_balancer = "yes"\n' + STACK,
        ("load_balancer: 'yes' must be a table ([load_balancer])",),
        whole=True,
    ),
    Case(
        "top-level-not-a-table",
        "database = 3\n",
        ("database: 3 must be a table", "[database]"),
        whole=True,
    ),
    # --- wrong types --------------------------------------------------------------------------
    Case(
        "string-for-number",
        '[database]\nmax_capacity = "4"\n',
        ("database -> max_capacity: '4' must be a number",),
    ),
    Case(
        "float-for-integer",
        "[mlflow]\nworkers = 2.5\n",
        ("mlflow -> workers: 2.5 must be an integer",),
    ),
    Case(
        "string-for-bool",
        '[load_balancer]\ninternal = "yes"\n',
        ("load_balancer -> internal: 'yes' must be true/false",),
    ),
    Case(
        "bool-for-integer",
        "[service]\ndesired_count = true\n",
        ("service -> desired_count: True must be an integer",),
    ),
    Case(
        "list-of-numbers",
        "[network]\nallowed_cidrs = [10]\n",
        ("network -> allowed_cidrs: every item of [10] must be a string",),
    ),
    # --- impossible values --------------------------------------------------------------------
    Case(
        "fargate-cpu",
        "[mlflow]\ncpu = 300\n",
        ("mlflow -> cpu: 300 is not a Fargate size", "use one of [256, 512"),
    ),
    Case(
        "fargate-memory",
        "[mlflow]\ncpu = 256\nmemory = 4096\n",
        ("mlflow -> memory: 4096 MiB does not fit cpu 256", "use 512 to 2048"),
    ),
    Case(
        "capacity-step",
        "[database]\nmax_capacity = 2.3\n",
        ("database -> max_capacity: 2.3 is not an Aurora Serverless v2 capacity", "steps of 0.5"),
    ),
    Case(
        "capacity-min-above-max",
        "[database]\nmin_capacity = 8\nmax_capacity = 4\n",
        ("database -> min_capacity: 8 is above max_capacity", "lower it or raise max_capacity"),
    ),
    Case(
        "log-retention",
        "[service]\nlog_retention_days = 10\n",
        ("service -> log_retention_days: 10 is not a retention", "use one of [1, 3"),
    ),
    Case(
        "same-ports",
        "[oauth2_proxy]\nport = 5000\n",
        ("oauth2_proxy -> port: 5000 must differ from mlflow -> port",),
    ),
    Case(
        "bad-stack-name",
        '[stack]\nname = "Bad_Name"\n',
        ("stack -> name: 'Bad_Name' is not a valid stack name", "lowercase"),
        whole=True,
    ),
    # --- network ------------------------------------------------------------------------------
    Case(
        "cidr-prefix-33",
        '[network]\nallowed_cidrs = ["10.0.0.0/33"]\n',
        ("network -> allowed_cidrs: '10.0.0.0/33' is not an IPv4 CIDR block", "'10.0.0.0/16'"),
    ),
    Case(
        "cidr-host-bits",
        '[network]\ncidr = "10.42.0.1/16"\n',
        ("network -> cidr: '10.42.0.1/16' is not an IPv4 CIDR block", "has host bits set"),
    ),
    Case(
        "vpc-cidr-too-big",
        '[network]\ncidr = "10.0.0.0/8"\n',
        ("network -> cidr: '10.0.0.0/8' has a /8 prefix", "/16 to /24"),
    ),
    Case(
        "vpc-without-subnets",
        '[network]\nvpc_id = "vpc-0123456789abcdef0"\n',
        ("network -> vpc_id", "give vpc_id together with public_subnet_ids"),
    ),
    # --- bucket names -------------------------------------------------------------------------
    Case(
        "bucket-uppercase",
        '[artifacts]\nbucket = "My_Bucket"\n',
        ("artifacts -> bucket: 'My_Bucket' is not a valid S3 bucket name", "lowercase letters"),
    ),
    Case(
        "bucket-ip-address",
        '[artifacts]\nbucket = "192.168.1.10"\n',
        ("artifacts -> bucket: '192.168.1.10' is not a valid S3 bucket name",),
    ),
    Case(
        "bucket-too-short",
        '[artifacts]\nbucket = "ab"\n',
        ("artifacts -> bucket: 'ab' is not a valid S3 bucket name", "3-63"),
    ),
    # --- regions ------------------------------------------------------------------------------
    Case(
        "region-unknown-in-config",
        'region = "eu-west-9"\n',
        ("stack -> region: 'eu-west-9' is not a known AWS region", "'eu-west-1'"),
    ),
    Case(
        "region-malformed-in-config",
        'region = "mars"\n',
        ("stack -> region: 'mars' is not an AWS region name", "'eu-west-1'"),
    ),
    Case(
        "region-flag",
        "",
        ("--region: 'eu-west-9' is not a known AWS region", "--region eu-west-1"),
        args=("--region", "eu-west-9"),
    ),
    Case(
        "region-env",
        "",
        ("AWS_REGION: 'xx-nowhere-7' is not a known AWS region", "'eu-west-1'"),
        env={"AWS_REGION": "xx-nowhere-7"},
        subprocess=True,
    ),
    Case(
        "certificate-other-region",
        f'region = "eu-west-1"\n[load_balancer]\ncertificate_arn = "{OTHER_REGION_CERT}"\n',
        (
            "load_balancer -> certificate_arn: the certificate is in us-east-1",
            "but the stack is in eu-west-1",
            "a certificate from its region",
        ),
    ),
    Case(
        "certificate-other-region-flag",
        f'[load_balancer]\ncertificate_arn = "{OTHER_REGION_CERT}"\n',
        (
            "load_balancer -> certificate_arn: the certificate is in us-east-1",
            "but the stack runs in eu-west-1",
            "a certificate from its own region",
        ),
        args=("--region", "eu-west-1"),
    ),
    Case(
        "certificate-malformed",
        '[load_balancer]\ncertificate_arn = "arn:aws:iam::1:cert"\n',
        ("load_balancer -> certificate_arn", "is not an ACM certificate ARN", "arn:aws:acm:REGION"),
    ),
    Case(
        "domain-without-certificate",
        '[load_balancer]\ndomain = "mlflow.example.com"\n',
        ("load_balancer -> certificate_arn: missing", "give certificate_arn"),
    ),
    # --- files --------------------------------------------------------------------------------
    Case("empty-file", "", ("stack -> name: missing",), whole=True),
    Case(
        "not-toml",
        "stack = [\n",
        ("is not valid TOML", "fix the syntax", "UTF-8 TOML file"),
        whole=True,
    ),
    Case("invalid-utf8", file="bad-utf8", expect=("cannot be read: not UTF-8", "save it as UTF-8")),
    Case("a-directory", file="dir", expect=("is a directory, not a config file", "--config PATH")),
    Case(
        "missing-file",
        file="missing",
        expect=("no such file", "--config PATH", "MLFLOW_ECS_CONFIG"),
    ),
    # --- the AWS environment ------------------------------------------------------------------
    Case(
        "no-credentials",
        "",
        ("No AWS credentials were found", "AWS_ACCESS_KEY_ID"),
        env=NO_CREDENTIALS,
        unset=UNSET_CREDENTIALS,
        calls=READS_ONLY,
        subprocess=True,
    ),
    Case(
        "unknown-profile-flag",
        "",
        ("The config profile (nope) could not be found", "--profile"),
        args=("--profile", "nope"),
        subprocess=True,
    ),
    Case(
        "unknown-profile-env",
        "",
        ("The config profile (nope) could not be found", "AWS_PROFILE"),
        env={"AWS_PROFILE": "nope"},
        unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ),
    Case(
        "bad-max-attempts",
        "",
        ("AWS_MAX_ATTEMPTS: 'many' is not a positive whole number", "or unset it"),
        env={"AWS_MAX_ATTEMPTS": "many"},
    ),
    Case(
        "unreachable-endpoint",
        "",
        ("Could not reach AWS", "Could not connect to the endpoint URL", "AWS_ENDPOINT_URL"),
        code=1,
        calls=READS_ONLY,
        subprocess=True,
    ),
    Case(
        "unreachable-endpoint-status",
        "",
        ("Could not reach AWS", "AWS_ENDPOINT_URL"),
        code=1,
        calls=READS_ONLY,
        command=("status",),
    ),
    Case(
        "unreachable-endpoint-down",
        "",
        ("Could not reach AWS", "AWS_ENDPOINT_URL"),
        code=1,
        calls=READS_ONLY,
        command=("down", "--yes"),
    ),
]


def write_config(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    if case.file == "bad-utf8":
        path.write_bytes(STACK.encode() + b'region = "\xff\xfe"\n')
    elif case.file == "dir":
        path.mkdir()
    elif case.file == "toml":
        path.write_text(case.config if case.whole else STACK + case.config, encoding="utf-8")
    return path  # "missing": never written


class ApiCalls:
    """Every AWS operation any botocore client is asked for, as 'service.Operation'."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.attempts = 0  # HTTP requests botocore tried to send (retries included)

    def sent(self, **_: Any) -> None:
        self.attempts += 1

    def mutating(self) -> list[str]:
        return [c for c in self.seen if not c.split(".", 1)[1].startswith(READ_PREFIXES)]


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    calls = ApiCalls()
    original = BaseClient._make_api_call

    def record(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        calls.seen.append(f"{self.meta.service_model.service_name}.{operation}")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    monkeypatch.setattr(awsmod, "GLOBAL_HOOKS", [("before-send.*.*", calls.sent)])
    return calls


def environment(case: Case, tmp_path: Path) -> dict[str, str]:
    """What the case runs with: OAuth values, empty AWS files, an endpoint nobody serves."""
    empty = tmp_path / "empty-aws-file"
    empty.write_text("", encoding="utf-8")
    return {
        **ENV,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
        "AWS_MAX_ATTEMPTS": "1",  # connection errors are retried with backoff otherwise
        "COLUMNS": "250",
        **case.env,
    }


def check_output(case: Case, code: int, output: str, elapsed: float) -> None:
    assert code == case.code, f"exit {code} != {case.code}:\n{output}"
    flat = " ".join(output.split())
    for text in case.expect:
        assert text in flat, f"{text!r} not in:\n{output}"
    assert "Hint: " in output  # every error says what to do
    assert "Traceback" not in output
    assert elapsed < 20, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_with_the_problem_and_the_fix_and_changes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_calls: ApiCalls
) -> None:
    path = write_config(case, tmp_path)
    for key, value in environment(case, tmp_path).items():
        monkeypatch.setenv(key, value)
    for key in case.unset:
        monkeypatch.delenv(key, raising=False)
    started = time.monotonic()
    result = CliRunner().invoke(app, [*case.args, *case.command, "-c", str(path)])
    elapsed = time.monotonic() - started
    assert not isinstance(result.exception, Exception), repr(result.exception)
    check_output(case, result.exit_code, result.output, elapsed)
    assert result.stdout == ""  # errors go to stderr
    assert api_calls.mutating() == []
    if case.calls == NO_CALL:
        assert api_calls.seen == []
    else:
        assert api_calls.seen == ["sts.GetCallerIdentity"]  # who am I: and it stopped there
    # AWS_MAX_ATTEMPTS=1 is honoured: one try at the closed port, no backoff (no credentials:
    # nothing is sent at all).
    assert api_calls.attempts == (1 if case.code == 1 else 0)


SUBPROCESS_CASES = [c for c in CASES if c.subprocess]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c.id for c in SUBPROCESS_CASES])
def test_bad_environment_through_the_installed_script(case: Case, tmp_path: Path) -> None:
    path = write_config(case, tmp_path)
    keep = ("PATH", "HOME", "LANG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    env = {k: v for k, v in os.environ.items() if k in keep}  # the conftest's fake keys
    env |= {"AWS_DEFAULT_REGION": "eu-west-1", **environment(case, tmp_path)}
    for key in case.unset:
        env.pop(key, None)
    started = time.monotonic()
    done = subprocess.run(
        [*console_script(), *case.args, *case.command, "-c", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    check_output(case, done.returncode, done.stderr, time.monotonic() - started)
    assert done.stdout == ""


@pytest.fixture
def deployed(moto: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("MLFLOW_ECS_POLL_INTERVAL", "0.01")
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "stack.toml"
    path.write_text(STACK + '[oauth2_proxy]\nemail_domains = ["example.com"]\n', "utf-8")
    result = CliRunner().invoke(app, ["up", "-c", str(path)])
    assert result.exit_code == 0, result.output
    yield path


def test_down_without_yes_and_no_terminal_refuses(deployed: Path, api_calls: ApiCalls) -> None:
    result = CliRunner().invoke(app, ["down", "-c", str(deployed)])
    case = Case("down-no-terminal", expect=("no terminal", "nothing was changed", "--yes"))
    check_output(case, result.exit_code, result.output, 0)
    assert api_calls.seen and api_calls.mutating() == []
