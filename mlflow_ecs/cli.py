"""typer commands: parse, build the app context, call the engine, render. No boto3 here.

Exit codes: 0 success; 1 AWS/operation failure; 2 usage or config error;
3 (status) stack missing or unhealthy; 130 interrupted (run the same command again).
`plan` follows Terraform's -detailed-exitcode: 0 no changes, 2 changes, 1 any error.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from . import __version__
from .errors import EXIT_UNHEALTHY, EXIT_USAGE, MlflowEcsError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from .changes import Plan
    from .config import Config
    from .engine import StackStatus
    from .steps.base import StepContext

# The demo's OAuth client: placeholders, put in this process's environment only and stored
# only in the emulator's Secrets Manager. They are never printed.
DEMO_OAUTH_ENV = {
    "OAUTH2_PROXY_CLIENT_ID": "demo-client-id.apps.googleusercontent.com",
    "OAUTH2_PROXY_CLIENT_SECRET": "demo-placeholder-client-secret",
}

EXIT_CODES = """Exit codes: 0 success, 1 AWS or operation failure, 2 usage or config error,
3 (status) stack missing or unhealthy, 130 interrupted (run the same command again).
plan: 0 no changes, 2 changes, 1 any error (Terraform's -detailed-exitcode)."""

app = typer.Typer(
    name="mlflow-ecs",
    help=f"Run a private, authenticated MLflow tracking server on AWS ECS Fargate.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secret values
    add_completion=False,
)


CONFIG_HELP = "Config file (default: $MLFLOW_ECS_CONFIG, else ./mlflow-ecs.toml)."
ConfigOption = Annotated[str | None, typer.Option("--config", "-c", help=CONFIG_HELP)]


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
    config: ConfigOption = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile (wins over AWS_PROFILE)")] = None,
    region: Annotated[
        str | None, typer.Option(help="AWS region (wins over stack.region and AWS_REGION)")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            metavar="",
            help="Debug log on stderr: each step and AWS operation (-vv: also botocore's "
            "request details). Secret values are always masked.",
        ),
    ] = 0,
) -> None:
    from . import redact, ui

    redact.register_environment(os.environ)  # before anything can fail or log
    ui.setup_logging(verbose)
    ctx.call_on_close(lambda: ui.setup_logging(0))  # a process that runs several commands
    ctx.obj = Options(config, profile, region)


@contextmanager
def _guard(error_code: int | None = None) -> Iterator[None]:
    """The one way out: every error becomes its message, hint and exit code (``error_code``:
    the same code for every error, as `plan` needs)."""
    from . import ui

    try:
        yield
    except MlflowEcsError as err:
        ui.show_error(err)
        raise typer.Exit(error_code or err.exit_code) from None
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

    if opts.region and (problem := cfgmod.region_problem(opts.region)):
        raise UsageError(f"--region: {problem}.", "Pass a region like --region eu-west-1.")
    region = opts.region or cfg.stack.region or None
    aws = AwsContext(region=region, profile=opts.profile)
    if not region and (problem := cfgmod.region_problem(aws.region)):  # the profile's region
        raise UsageError(
            f"The region of the AWS profile in use: {problem}.",
            "Fix region in ~/.aws/config, or pass --region / set stack.region.",
        )
    return engine.context(cfgmod.with_region(cfg, aws.region), aws, report, delete_data=delete_data)


def _obj(ctx: typer.Context, config: str | None = None) -> Options:
    """The root options; a command's own --config wins over the one given before it."""
    obj = ctx.obj
    assert isinstance(obj, Options)
    return replace(obj, config=config) if config else obj


ForceUnlock = Annotated[
    bool,
    typer.Option(
        "--force-unlock",
        help="Break the stack's lock first (only when the up/down that holds it is gone).",
    ),
]
WaitLock = Annotated[
    float,
    typer.Option("--wait", metavar="SECONDS", help="Wait this long for another up/down to end."),
]


def _refuse_if_locked(sc: StepContext, force: bool) -> None:
    from . import lock

    holder = lock.current_holder(sc)
    if holder is not None and not force:
        raise lock.StackLocked(
            f"Stack {sc.names.stack!r} is locked by {holder.describe()}; nothing was changed.",
            "Wait for it to finish and run again, or use --force-unlock if it is gone.",
        )


@contextmanager
def _locked(sc: StepContext, command: str, force: bool, wait: float) -> Iterator[None]:
    """One up/down of a stack at a time (an SSM parameter); released on every way out."""
    from . import lock, ui

    if force and (holder := lock.current_holder(sc)) is not None:
        lock.force_unlock(sc)
        ui.info(f"Broke the stack lock held by {holder.describe()}.", "yellow")
    with lock.held(sc, command, wait):
        yield


def _review(yes: bool) -> Callable[[Plan], None]:
    """What `up` does with the plan of an existing stack: show what changes; ask before a
    replacement or deletion (unless --yes; with no terminal to ask on, refuse)."""
    from . import ui

    def review(planned: Plan) -> None:
        ui.plan_table(planned, ui.stderr(), only_changes=True)
        destructive = planned.destructive
        if not destructive or yes:
            return
        what = ", ".join(f"{c.action} {c.kind} {c.name}" for c in destructive)
        if not ui.interactive():
            raise UsageError(
                f"up would {what}, which needs a confirmation, and there is no terminal to "
                "ask on: nothing was changed.",
                "Run it in a terminal, or pass --yes (see `mlflow-ecs plan` first).",
            )
        if not ui.confirm(f"up will {what}. Go ahead?"):
            raise UsageError("Not confirmed: nothing was changed.")

    return review


@app.command()
def up(
    ctx: typer.Context,
    config: ConfigOption = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Do not ask before replacing or deleting a resource."),
    ] = False,
    force_unlock: ForceUnlock = False,
    wait: WaitLock = 0.0,
) -> None:
    """Create or update the stack; a re-run with nothing changed changes nothing.

    On an existing stack it first shows what will change, and asks before anything is
    replaced or deleted."""
    from . import engine, ui

    with _guard():
        opts = _obj(ctx, config)
        cfg = load_config(opts)
        prompt: Callable[[str], str] | None = ui.prompt_secret if ui.interactive() else None
        with ui.Progress() as progress:
            sc = step_context(opts, cfg, progress)
            result = engine.up(
                sc, prompt, lambda: _locked(sc, "up", force_unlock, wait), _review(yes)
            )
        ui.info(f"Stack {cfg.stack.name!r} is up: {result.url}", "bold green")
        for text in result.warnings:
            ui.info(f"WARNING: {text}", "bold yellow")


class _PlanCommand(typer.core.TyperCommand):
    """`plan`'s own option errors exit 1, as all its errors do (its 2 means: changes)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as err:
            if getattr(err, "exit_code", None) == EXIT_USAGE:
                err.exit_code = 1  # type: ignore[attr-defined]
            raise


@app.command(cls=_PlanCommand)
def plan(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Show what `up` would create, update, replace or delete; changes nothing.

    Exit 0: nothing would change; 2: something would; 1: any error."""
    from . import engine, lock, ui

    with _guard(error_code=1):
        opts = _obj(ctx, config)
        cfg = load_config(opts)
        sc = step_context(opts, cfg, _silent)
        planned = engine.plan(sc)
        with suppress(MlflowEcsError):  # only a note: a role that may not read it still plans
            if (holder := lock.current_holder(sc)) is not None:
                ui.info(f"Note: {holder.describe()} holds the stack's lock: it is changing.")
        if as_json:
            ui.plan_json(planned)
        else:
            ui.plan_table(planned)
    raise typer.Exit(2 if planned.changed else 0)


@app.command()
def status(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Show every resource, the service's health and the URL (exit 3: missing or unhealthy)."""
    from . import engine, ui

    with _guard():
        opts = _obj(ctx, config)
        cfg = load_config(opts)
        sc = step_context(opts, cfg, _silent)
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
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    delete_data: Annotated[
        bool,
        typer.Option(
            "--delete-data",
            help="Also delete the bucket (every object version), skip the final snapshot, "
            "delete old final snapshots and force-delete the secrets. Cannot be undone.",
        ),
    ] = False,
    force_unlock: ForceUnlock = False,
    wait: WaitLock = 0.0,
) -> None:
    """Remove the stack; keeps the bucket, a final DB snapshot and the secrets unless asked."""
    from . import engine, ui

    with _guard():
        opts = _obj(ctx, config)
        cfg = load_config(opts)
        sc = step_context(opts, cfg, _silent, delete_data=delete_data)
        # With --yes, down follows at once: it reuses these reads instead of asking again.
        sc.remember = yes
        current = engine.status(sc, with_drift=False)
        sc.remember = False
        removed, kept = engine.what_down_removes(sc, current)
        if not removed:
            _refuse_if_locked(sc, force_unlock)  # an up may be starting to make it
            ui.info(
                f"Stack {cfg.stack.name!r} does not exist in {sc.aws.region}: nothing to remove.",
                "green",
            )
            if kept:
                ui.bullet_list("Still there (kept on purpose):", kept)
            return
        if not yes:
            if not ui.interactive():
                raise UsageError(
                    "down needs a confirmation and there is no terminal to ask on: "
                    "nothing was changed.",
                    "Run it in a terminal, or pass --yes.",
                )
            ui.bullet_list(
                f"This removes from stack {cfg.stack.name!r} ({sc.aws.region}):", removed
            )
            if kept:
                ui.bullet_list("and keeps:", kept)
            if not ui.confirm("Go ahead?"):
                ui.info("Nothing was changed.")
                raise typer.Exit(EXIT_USAGE)
        with _locked(sc, "down", force_unlock, wait):
            _run_down(sc, kept)


def _run_down(sc: StepContext, kept: list[str]) -> None:
    """engine.down with live progress, then what was kept (the final snapshot included)."""
    from . import engine, ui

    with ui.Progress() as progress:
        sc.report = progress
        engine.down(sc)
    sc.report = _silent
    ui.info(f"Stack {sc.names.stack!r} is down.", "bold green")
    if snapshot := engine.kept_snapshot(sc):
        kept = [
            *kept,
            f"database snapshot {snapshot} (the next `up` restores the database from it)",
        ]
    if kept:
        ui.bullet_list("Kept:", kept)


@contextmanager
def _demo_config(given: str | None) -> Iterator[Path]:
    """The user's config file, else the built-in example shipped with the package."""
    from importlib import resources
    from pathlib import Path

    if given:
        yield Path(given)
        return
    with resources.as_file(resources.files("mlflow_ecs") / "demo.toml") as path:
        yield path


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@app.command()
def demo(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Your config instead of the built-in example."),
    ] = None,
) -> None:
    """Try it with no AWS account: up, status and down on an embedded AWS emulator (moto)."""
    from . import config as cfgmod
    from . import engine, sandbox, ui

    opts = _obj(ctx)
    with _guard(), _environment(DEMO_OAUTH_ENV):
        with _demo_config(config or opts.config) as path:
            cfg = cfgmod.load(path)
        region = opts.region or cfg.stack.region or sandbox.DEFAULT_REGION
        local = Options(None, None, region)  # never a profile: nothing may reach real AWS
        with sandbox.running(region, running_tasks=cfg.service.desired_count) as box:
            ui.info(
                f"AWS emulator (moto) on {box.endpoint}, {region}: nothing leaves this machine."
            )
            ui.heading(f"mlflow-ecs up  (stack {cfg.stack.name!r}, {path.name})")
            with ui.Progress() as progress:
                engine.up(step_context(local, cfg, progress))
            sc = step_context(local, cfg, _silent)
            current = engine.status(sc)
            _show_demo_stack(sc, current)
            ui.heading("mlflow-ecs plan  (right after up: nothing to change)")
            ui.plan_table(engine.plan(step_context(local, cfg, _silent)), only_changes=True)
            ui.heading("mlflow-ecs down --yes")
            _run_down(sc, engine.what_down_removes(sc, current)[1])
        ui.info(
            "Demo done; the emulator is stopped. For AWS: write mlflow-ecs.toml (see "
            "config.example.toml), then mlflow-ecs up.",
            "bold",
        )


def _show_demo_stack(sc: StepContext, current: StackStatus) -> None:
    from . import engine, ui

    ui.heading("mlflow-ecs status")
    ui.status_table(current)
    ui.heading("the registered task definition")
    td = engine.registered_task_definition(sc, current.task_definition)
    if td is not None:
        ui.task_containers(td)
    ui.info(
        f"On AWS, MLflow would now be at {current.url} (behind oauth2-proxy's login).", "bold green"
    )


def _desired_count(opts: Options) -> int:
    """ECS tasks the emulator reports running: the config's desired count, if one loads."""
    from . import config as cfgmod

    try:
        return cfgmod.load(cfgmod.config_path(opts.config, os.environ)).service.desired_count
    except MlflowEcsError:
        return 1


@app.command("sandbox")
def sandbox_command(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0: a free one).", min=0, max=65535)
    ] = 0,
    region: Annotated[
        str | None, typer.Option(help="The AWS_REGION to print (default: us-east-1).")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config whose service.desired_count the emulated ECS services run "
            "(default: as for up; 1 when there is none).",
        ),
    ] = None,
) -> None:
    """Run the embedded AWS emulator until Ctrl-C; prints the exports that point up at it."""
    from . import sandbox, ui

    opts = _obj(ctx, config)
    with _guard():
        running = _desired_count(opts)
        box = sandbox.start(region or opts.region or sandbox.DEFAULT_REGION, port, running)
        try:
            with _stop_signals() as stop:  # before the exports: a reader may signal at once
                ui.info(
                    f"AWS emulator (moto) on {box.endpoint}, ECS services report {running} "
                    "running task(s). Run these lines in another shell, then mlflow-ecs up / "
                    "status / down there. Ctrl-C stops the emulator; its state is in memory only.",
                    "bold",
                )
                ui.export_lines(box.export_lines())
                while not stop.wait(0.5):
                    pass
        finally:
            box.stop()
        ui.info("Emulator stopped.")


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT (Ctrl-C) or SIGTERM instead of their usual effect."""
    stop = threading.Event()
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in wanted}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    from . import redact

    redact.register_environment(os.environ)  # before anything can fail or log
    try:
        app()
    except Exception as exc:  # a bug: typer's traceback (no locals), secrets masked
        from . import ui

        ui.unexpected_error(exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
