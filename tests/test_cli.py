"""The CLI through typer's CliRunner, against moto in-process.

Exit codes and messages: --version and --help; config errors (exit 2, the key path named, no
AWS call); up → status (table and --json, never a secret value) → down (refused without --yes
and a terminal, then done, then "does not exist"); status of a missing stack (exit 3); where
the config file is found (--config/-c, $MLFLOW_ECS_CONFIG, ./mlflow-ecs.toml).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import CLIENT_SECRET, REGION, ApiCalls, Cli

from mlflow_ecs import __version__, config
from mlflow_ecs.config import Names

MOTO_ACCOUNT = "123456789012"
STACK = "cli-test"
CONFIG = f"""
[stack]
name = "{STACK}"
tags = {{ team = "tests" }}

[oauth2_proxy]
email_domains = ["example.com"]
"""


def expected_resources(names: Names) -> set[tuple[str, str]]:
    """(kind, name) of every resource `status` reports for a stack that creates its VPC."""
    return {
        ("vpc", names.vpc),
        ("security group", names.sg_alb),
        ("security group", names.sg_tasks),
        ("security group", names.sg_db),
        ("bucket", names.bucket),
        ("secret", names.secret_db_password),
        ("secret", names.secret_client_id),
        ("secret", names.secret_client_secret),
        ("secret", names.secret_cookie),
        ("database cluster", names.db_cluster),
        ("database writer", names.db_instance),
        ("execution role", names.execution_role),
        ("task role", names.task_role),
        ("log group", names.log_group),
        ("ecs cluster", names.ecs_cluster),
        ("load balancer", names.alb),
        ("target group", names.target_group),
        ("task definition", names.task_family),
        ("service", names.service),
    }


def names_of(text: str, region: str = REGION) -> Names:
    cfg = config.parse(tomllib.loads(text), {})
    return cfg.names(MOTO_ACCOUNT, region)


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def deployed(moto: None, cli: Cli, cfg_file: Path) -> Iterator[Path]:
    """A stack that `mlflow-ecs up` made."""
    result = cli("up", "-c", str(cfg_file))
    assert f"Stack '{STACK}' is up" in result.output
    yield cfg_file


def stored_secret_values() -> list[str]:
    client = boto3.client("secretsmanager", region_name=REGION)
    names = names_of(CONFIG)
    ids = [names.secret_db_password, names.secret_cookie, names.secret_client_secret]
    return [client.get_secret_value(SecretId=i)["SecretString"] for i in ids]


def table_rows(text: str) -> set[tuple[str, str]]:
    """(resource, name) of each row of the status table."""
    rows = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5:
            rows.add((cells[0], cells[1]))
    return rows


# --- help and version -------------------------------------------------------------------------


def test_version_prints_the_package_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.stdout.strip() == f"mlflow-ecs {__version__}"


def test_help_lists_every_command_and_the_exit_codes(cli: Cli) -> None:
    text = cli("--help").output
    for command in ("up", "status", "down", "demo", "sandbox"):
        assert re.search(rf"^\W*{command}\s+\S", text, re.M), f"{command} missing from --help"
    flat = " ".join(text.split())
    assert "0 success" in flat
    assert "1 AWS or operation failure" in flat
    assert "2 usage or config error" in flat
    assert "3 (status) stack missing or unhealthy" in flat


def test_no_arguments_shows_the_help(cli: Cli) -> None:
    result = cli(code=2)  # click's usage exit for "no command given"
    assert "Commands" in result.output


# --- config errors: exit 2, the key path named, no AWS call ----------------------------------

BAD_CONFIG = """
[stack]
name = "Bad_Name"

[database]
max_capacity = 999

[service]
desird_count = 2
"""


@pytest.mark.parametrize("command", [["up"], ["status"], ["status", "--json"], ["down", "--yes"]])
def test_config_errors_exit_2_naming_every_key_without_any_aws_call(
    moto: None, cli: Cli, api_calls: ApiCalls, tmp_path: Path, command: list[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_CONFIG, encoding="utf-8")
    result = cli(*command, "-c", str(bad), code=2)
    assert "stack -> name" in result.output
    assert "database -> max_capacity" in result.output
    assert "service -> desird_count: unknown key" in result.output
    assert api_calls.seen == []
    assert result.stdout == ""  # errors go to stderr; stdout is for data


def test_a_missing_config_file_exits_2_naming_the_path(
    moto: None, cli: Cli, api_calls: ApiCalls, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.toml"
    result = cli("status", "-c", str(missing), code=2)
    assert str(missing) in result.output
    assert "no such file" in result.output
    assert api_calls.seen == []


def test_up_without_the_oauth_client_exits_2_before_any_change(
    moto: None, cli: Cli, api_calls: ApiCalls, cfg_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OAUTH2_PROXY_CLIENT_SECRET")
    result = cli("up", "-c", str(cfg_file), code=2)
    assert "OAUTH2_PROXY_CLIENT_SECRET: missing" in result.output
    assert api_calls.mutating() == []


# --- up → status → down -----------------------------------------------------------------------


def test_status_after_up_lists_every_resource_the_service_and_the_url(
    deployed: Path, cli: Cli
) -> None:
    result = cli("status", "-c", str(deployed))
    rows = table_rows(result.stdout)
    assert expected_resources(names_of(CONFIG)) <= rows
    assert "service: 1/1 tasks running; stack is healthy" in result.stdout
    assert re.search(r"^url: http://\S+\.elb\.amazonaws\.com$", result.stdout, re.M)
    # AWS text is printed as it is: no rich emoji codes (":secret:") or markup in ARNs.
    assert f":secret:{STACK}/db-password-" in result.stdout


def test_status_json_is_one_document_with_every_resource_and_no_secret(
    deployed: Path, cli: Cli
) -> None:
    result = cli("status", "--json", "-c", str(deployed))
    doc = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert doc["stack"] == STACK
    assert doc["region"] == REGION
    assert doc["exists"] is True
    assert doc["healthy"] is True
    assert doc["service"]["running"] == doc["service"]["desired"] == 1
    assert doc["url"].startswith("http://") and doc["url"].endswith(".elb.amazonaws.com")
    got = {(r["kind"], r["name"]) for r in doc["resources"]}
    assert got == expected_resources(names_of(CONFIG))
    assert all(r["present"] and r["id"] for r in doc["resources"])
    for value in [*stored_secret_values(), CLIENT_SECRET]:
        assert value not in result.output
    for output in cli.outputs:  # up's progress too
        assert not any(value in output for value in stored_secret_values())


def test_down_without_yes_and_without_a_terminal_refuses_and_changes_nothing(
    deployed: Path, cli: Cli, api_calls: ApiCalls
) -> None:
    result = cli("down", "-c", str(deployed), code=2)
    assert "no terminal" in result.output
    assert "--yes" in result.output
    assert api_calls.mutating() == []
    after = json.loads(cli("status", "--json", "-c", str(deployed)).stdout)
    assert after["healthy"] is True


def test_down_yes_removes_the_stack_and_says_what_it_kept_then_does_nothing(
    deployed: Path, cli: Cli
) -> None:
    names = names_of(CONFIG)
    first = cli("down", "--yes", "-c", str(deployed))
    assert f"Stack '{STACK}' is down." in first.output
    kept = first.output.split("Kept:", 1)[1]
    assert f"bucket {names.bucket} and every object in it" in kept
    assert f"database snapshot {names.snapshot_prefix}" in kept
    assert f"secret {names.secret_client_secret} (scheduled for deletion" in kept

    second = cli("down", "--yes", "-c", str(deployed))
    assert f"Stack '{STACK}' does not exist in {REGION}: nothing to remove." in second.output
    assert names.bucket in second.output  # still there, on purpose

    after = json.loads(cli("status", "--json", "-c", str(deployed), code=3).stdout)
    present = {r["kind"] for r in after["resources"] if r["present"]}
    assert present == {"bucket", "secret"}  # the data; the secrets only scheduled for deletion


def test_status_of_a_stack_that_does_not_exist_exits_3(
    moto: None, cli: Cli, cfg_file: Path
) -> None:
    table = cli("status", "-c", str(cfg_file), code=3)
    assert "stack is missing" in table.stdout
    doc = json.loads(cli("status", "--json", "-c", str(cfg_file), code=3).stdout)
    assert doc["exists"] is False
    assert doc["healthy"] is False
    assert not any(r["present"] for r in doc["resources"])


def test_down_of_a_stack_that_never_existed_succeeds_and_says_so(
    moto: None, cli: Cli, cfg_file: Path, api_calls: ApiCalls
) -> None:
    result = cli("down", "--yes", "-c", str(cfg_file))
    assert "does not exist" in result.output
    assert api_calls.mutating() == []


# --- where the config comes from --------------------------------------------------------------
# Each candidate file is invalid in the same way, so the error names the file that was read:
# the same path resolution as a valid config, without any AWS call.


def config_read(cli: Cli, *args: str) -> str:
    result = cli(*args, code=2)
    found = re.search(r"^Error: (\S+\.toml): 1 problem:", result.output, re.M)
    assert found, result.output
    return found[1]


@pytest.fixture
def three_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """./mlflow-ecs.toml, the file $MLFLOW_ECS_CONFIG could name, and one to give with -c."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    paths = {
        "cwd": work / "mlflow-ecs.toml",
        "env": tmp_path / "env.toml",
        "flag": tmp_path / "flag.toml",
    }
    for path in paths.values():
        path.write_text("[stack]\nname = 'x'\n", encoding="utf-8")  # too short: one problem
    return paths


def test_config_defaults_to_mlflow_ecs_toml_in_the_working_directory(
    cli: Cli, three_configs: dict[str, Path], api_calls: ApiCalls
) -> None:
    assert config_read(cli, "status") == "mlflow-ecs.toml"
    assert api_calls.seen == []


def test_config_from_the_environment_wins_over_the_working_directory(
    cli: Cli, three_configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ECS_CONFIG", str(three_configs["env"]))
    assert config_read(cli, "up") == str(three_configs["env"])


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--config", "FLAG"],
        ["down", "-c", "FLAG"],
        ["up", "-c", "FLAG"],
        ["--config", "FLAG", "status"],
        ["-c", "ENV", "status", "-c", "FLAG"],  # the command's own option wins over the root's
    ],
)
def test_config_flag_wins_over_environment_and_working_directory(
    cli: Cli, three_configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("MLFLOW_ECS_CONFIG", str(three_configs["env"]))
    given = {"FLAG": str(three_configs["flag"]), "ENV": str(three_configs["env"])}
    assert config_read(cli, *[given.get(a, a) for a in args]) == str(three_configs["flag"])


def test_no_config_anywhere_exits_2_and_says_where_to_put_one(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_calls: ApiCalls
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("status", code=2)
    assert "mlflow-ecs.toml: 1 problem" in result.output
    assert "--config PATH" in result.output
    assert "MLFLOW_ECS_CONFIG" in result.output
    assert api_calls.seen == []


def test_aws_region_alone_selects_the_region(
    moto: None, cli: Cli, cfg_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    doc = json.loads(cli("status", "--json", "-c", str(cfg_file), code=3).stdout)
    assert doc["region"] == "eu-central-1"


# --- demo without the sandbox extra -----------------------------------------------------------


def test_demo_without_moto_exits_2_with_the_install_command(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, api_calls: ApiCalls
) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # `import moto` now fails
    before = dict(os.environ)
    result = cli("demo", code=2)
    assert "pip install 'mlflow-ecs[sandbox]'" in result.output
    assert "pip install -e '.[sandbox]'" in result.output
    assert api_calls.seen == []
    assert dict(os.environ) == before  # no endpoint, credentials or moto settings left behind
