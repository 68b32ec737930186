"""typer commands: parse, build the app context, call the engine, render. No boto3 here.

Exit codes: 0 success; 1 AWS/operation failure; 2 usage or config error;
3 (status) stack missing or unhealthy; 130 interrupted (run the same command again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import __version__
from .errors import EXIT_UNHEALTHY, EXIT_USAGE, MlflowEcsError, UsageError

if TYPE_CHECKING:
    from .config import Config
    from .steps.base import StepContext

EXIT_CODES = """Exit codes: 0 success, 1 AWS or operation failure, 2 usage or config error,
3 (status) stack missing or unhealthy, 130 interrupted (run the same command again)."""

app = typer.Typer(
    name="mlflow-ecs",
    help=f"Run a private, authenticated MLflow tracking server on AWS ECS Fargate.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secret values
    add_completion=False,
)


@dataclass
class Options:
    config: str | None
    profile: str | None
    region: str | None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlflow-ecs {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Config file [default: $MLFLOW_ECS_CONFIG or ./mlflow-ecs.toml]"),
    ] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile (wins over AWS_PROFILE)")] = None,
    region: Annotated[
        str | None, typer.Option(help="AWS region (wins over stack.region and AWS_REGION)")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = Options(config, profile, region)


@contextmanager
def _guard() -> Iterator[None]:
    """The one way out: every error becomes its message, hint and exit code."""
    from . import ui

    try:
        yield
    except MlflowEcsError as err:
        ui.show_error(err)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        ui.info("Interrupted. Nothing is lost: run the same command again to continue.", "yellow")
        raise typer.Exit(130) from None


def load_config(opts: Options) -> Config:
    from . import config as cfgmod

    path = cfgmod.config_path(opts.config, os.environ)
    return cfgmod.load(path)


def step_context(opts: Options, cfg: Config, report: Any, delete_data: bool = False) -> StepContext:
    from . import config as cfgmod
    from . import engine
    from .aws import AwsContext

    region = opts.region or cfg.stack.region or None
    aws = AwsContext(region=region, profile=opts.profile)
    return engine.context(cfgmod.with_region(cfg, aws.region), aws, report, delete_data=delete_data)


def _obj(ctx: typer.Context) -> Options:
    obj = ctx.obj
    assert isinstance(obj, Options)
    return obj


@app.command()
def up(ctx: typer.Context) -> None:
    """Create or update the stack; a re-run with nothing changed changes nothing."""
    from . import engine, ui

    with _guard():
        cfg = load_config(_obj(ctx))
        prompt: Callable[[str], str] | None = ui.prompt_secret if ui.interactive() else None
        with ui.Progress() as progress:
            sc = step_context(_obj(ctx), cfg, progress)
            result = engine.up(sc, prompt)
        ui.info(f"Stack {cfg.stack.name!r} is up: {result.url}", "bold green")
        for text in result.warnings:
            ui.info(f"WARNING: {text}", "bold yellow")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Show every resource, the service's health and the URL (exit 3: missing or unhealthy)."""
    from . import engine, ui

    with _guard():
        cfg = load_config(_obj(ctx))
        sc = step_context(_obj(ctx), cfg, _silent)
        current = engine.status(sc)
        if as_json:
            ui.status_json(current)
        else:
            ui.status_table(current)
        if not current.healthy:
            raise typer.Exit(EXIT_UNHEALTHY)


def _silent(resource: str, state: str, detail: str = "") -> None:
    return None


@app.command()
def down(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    delete_data: Annotated[
        bool,
        typer.Option(
            "--delete-data",
            help="Also delete the bucket (every object version), skip the final snapshot, "
            "delete old final snapshots and force-delete the secrets. Cannot be undone.",
        ),
    ] = False,
) -> None:
    """Remove the stack. Keeps the bucket, a final DB snapshot and the secrets unless --delete-data."""
    from . import engine, ui

    with _guard():
        cfg = load_config(_obj(ctx))
        sc = step_context(_obj(ctx), cfg, _silent, delete_data=delete_data)
        current = engine.status(sc)
        removed, kept = engine.what_down_removes(sc, current)
        if not removed:
            ui.info(f"Stack {cfg.stack.name!r} does not exist in {sc.aws.region}: nothing to remove.", "green")
            if kept:
                ui.bullet_list("Still there (kept on purpose):", kept)
            return
        if not yes:
            if not ui.interactive():
                raise UsageError(
                    "down needs a confirmation and there is no terminal to ask on; nothing was changed.",
                    "Run it in a terminal, or pass --yes.",
                )
            ui.bullet_list(f"This removes from stack {cfg.stack.name!r} ({sc.aws.region}):", removed)
            if kept:
                ui.bullet_list("and keeps:", kept)
            if not ui.confirm("Go ahead?"):
                ui.info("Nothing was changed.")
                raise typer.Exit(EXIT_USAGE)
        with ui.Progress() as progress:
            sc.report = progress
            engine.down(sc)
        ui.info(f"Stack {cfg.stack.name!r} is down.", "bold green")
        if kept:
            ui.bullet_list("Kept:", kept)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
