#!/usr/bin/env python3
"""Benchmark the real commands against moto's server with simulated AWS timing.

moto answers in milliseconds and makes every resource ready at once. This script puts AWS's
timing back, through botocore event hooks on the tool's own clients:

- a round trip of --rtt-ms on every HTTP request;
- the Aurora cluster, its writer, the ALB and the ECS service's deployment reported as still
  creating / provisioning / in progress for --cluster-s, --instance-s, --alb-s, --service-s
  seconds after they were created (and deleting / draining for as long after deletion;
  DeleteDBCluster is refused while its writer is still being deleted, as on AWS).

It then runs `up` (fresh), `up` (no change), `plan`, `status` and `down --yes` through the CLI
in this process and prints wall time and API calls by operation; for fresh `up` and `down` also the
critical path computed from the delays and the ratio wall / critical path:

    fresh up: cluster, then writer (it needs an available cluster), then service
    down:     service drained, then writer deleted, then cluster deleted (ALB in parallel)

Usage: python scripts/bench.py --rtt-ms 30 --cluster-s 5 --instance-s 8 --alb-s 3 \
           --service-s 3 --poll 0.25
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CONFIG = """
[stack]
name = "bench"
region = "eu-west-1"
[oauth2_proxy]
email_domains = ["example.com"]
"""


class FakeHttp:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""
        self.text = ""
        self.raw = None


class Simulator:
    """AWS-like timing for the slow resources, applied to moto's answers."""

    def __init__(self, rtt: float, delays: dict[str, float]) -> None:
        self.rtt = rtt
        self.delays = delays
        self.created: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.last_seen: dict[str, Any] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.timeline: dict[str, float] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _within(self, table: dict[str, float], kind: str) -> bool:
        start = table.get(kind)
        return start is not None and time.monotonic() - start < self.delays[kind]

    def hooks(self) -> list[tuple[str, Any]]:
        return [
            ("before-send.*.*", self.before_send),
            ("before-call.*.*", self.count),
            ("before-call.rds.DeleteDBCluster", self.refuse_cluster_delete),
            ("after-call.rds.CreateDBCluster", self.mark("cluster", self.created)),
            ("after-call.rds.RestoreDBClusterFromSnapshot", self.mark("cluster", self.created)),
            ("after-call.rds.CreateDBInstance", self.mark("instance", self.created)),
            (
                "after-call.elastic-load-balancing-v2.CreateLoadBalancer",
                self.mark("alb", self.created),
            ),
            ("after-call.ecs.CreateService", self.mark("service", self.created)),
            ("after-call.ecs.UpdateService", self.mark_deployment),
            ("after-call.rds.DeleteDBCluster", self.mark("cluster", self.deleted)),
            ("after-call.rds.DeleteDBInstance", self.mark("instance", self.deleted)),
            (
                "after-call.elastic-load-balancing-v2.DeleteLoadBalancer",
                self.mark("alb", self.deleted),
            ),
            ("after-call.ecs.DeleteService", self.mark("service", self.deleted)),
            ("after-call.rds.DescribeDBClusters", self.db_clusters),
            ("after-call.rds.DescribeDBInstances", self.db_instances),
            ("after-call.elastic-load-balancing-v2.DescribeLoadBalancers", self.load_balancers),
            ("after-call.ecs.DescribeServices", self.services),
        ]

    def before_send(self, **_: Any) -> None:
        time.sleep(self.rtt)

    def count(self, event_name: str, **_: Any) -> None:
        _, service, op = event_name.split(".", 2)
        with self.lock:
            self.calls[f"{service}.{op}"] += 1
            if not op.startswith(("Describe", "Get", "List", "Head")):
                self.timeline.setdefault(f"{service}.{op}", time.monotonic() - self.t0)

    def mark(self, kind: str, table: dict[str, float]) -> Any:
        def hook(http_response: Any, **_: Any) -> None:
            if http_response.status_code < 300:
                table[kind] = time.monotonic()

        return hook

    def mark_deployment(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        svc = parsed.get("service", {})
        if http_response.status_code < 300 and svc.get("desiredCount", 0) > 0:
            self.created["service"] = time.monotonic()

    def refuse_cluster_delete(self, **_: Any) -> Any:
        if self._within(self.deleted, "instance"):
            time.sleep(self.rtt)
            error = {
                "Code": "InvalidDBClusterStateFault",
                "Message": "Cluster still has instances being deleted.",
            }
            return FakeHttp(400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    def _resurrect(
        self, http: Any, parsed: dict[str, Any], kind: str, key: str, patch: dict[str, Any]
    ) -> bool:
        """During a deletion window, answer 'still there, deleting' instead of 'not found'."""
        if not self._within(self.deleted, kind) or kind not in self.last_seen:
            return False
        item = copy.deepcopy(self.last_seen[kind]) | patch
        http.status_code = 200
        parsed.clear()
        parsed.update({key: [item], "ResponseMetadata": {"HTTPStatusCode": 200}})
        return True

    # -- describes -------------------------------------------------------------------------
    def db_clusters(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        for c in parsed.get("DBClusters", []):
            self.last_seen["cluster"] = copy.deepcopy(c)
            if self._within(self.created, "cluster"):
                c["Status"] = "creating"
        if not parsed.get("DBClusters"):
            self._resurrect(http_response, parsed, "cluster", "DBClusters", {"Status": "deleting"})

    def db_instances(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        for i in parsed.get("DBInstances", []):
            self.last_seen["instance"] = copy.deepcopy(i)
            if self._within(self.created, "instance"):
                i["DBInstanceStatus"] = "creating"
        if not parsed.get("DBInstances"):
            self._resurrect(
                http_response, parsed, "instance", "DBInstances", {"DBInstanceStatus": "deleting"}
            )

    def load_balancers(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        for lb in parsed.get("LoadBalancers", []):
            self.last_seen["alb"] = copy.deepcopy(lb)
            if self._within(self.created, "alb"):
                lb["State"] = {"Code": "provisioning"}
        if not parsed.get("LoadBalancers"):
            self._resurrect(
                http_response, parsed, "alb", "LoadBalancers", {"State": {"Code": "active"}}
            )

    def services(self, parsed: dict[str, Any], **_: Any) -> None:
        for svc in parsed.get("services", []):
            if svc.get("status") == "INACTIVE" and self._within(self.deleted, "service"):
                svc["status"] = "DRAINING"
            elif svc.get("status") == "ACTIVE" and self._within(self.created, "service"):
                svc["runningCount"] = 0
                for d in svc.get("deployments", []):
                    d["rolloutState"] = "IN_PROGRESS"
                    d["runningCount"] = 0


def warm_up(tmp: str) -> None:
    """One untimed up + down of another stack: moto compiles each response template and loads
    each backend on first use (tens of ms per operation, ~1 s for RDS), which AWS never does."""
    cfg = Path(tmp, "warmup.toml")
    cfg.write_text(CONFIG.replace('name = "bench"', 'name = "warmup"'))
    for args in (["up"], ["status"], ["down", "--yes"]):
        run_cli(["--config", str(cfg), *args])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"moto server did not start on port {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: list[str]) -> int:
    from typer.testing import CliRunner

    from mlflow_ecs.cli import app

    result = CliRunner().invoke(app, args, catch_exceptions=False)
    if result.exit_code not in ((0, 2) if args[-1] == "plan" else (0, 3)):
        sys.stderr.write(result.output)
    return result.exit_code


def measure(sim: Simulator, name: str, args: list[str], critical: float | None) -> dict[str, Any]:
    sim.calls.clear()
    sim.timeline.clear()
    start = sim.t0 = time.monotonic()
    code = run_cli(args)
    wall = time.monotonic() - start
    row: dict[str, Any] = {
        "command": name,
        "exit": code,
        "wall_s": round(wall, 2),
        "api_calls": sum(sim.calls.values()),
        "calls": dict(sorted(sim.calls.items())),
    }
    row["first_write_s"] = {
        k: round(v, 2) for k, v in sorted(sim.timeline.items(), key=lambda kv: kv[1])
    }
    if critical:
        row["critical_path_s"] = critical
        row["ratio"] = round(wall / critical, 3)
    return row


def help_time() -> float:
    exe = Path(sys.executable).with_name("mlflow-ecs")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow_ecs.cli"]
    best = float("inf")
    for _ in range(5):
        start = time.monotonic()
        subprocess.run([*cmd, "--help"], capture_output=True, check=True, timeout=30)
        best = min(best, time.monotonic() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtt-ms", type=float, default=30)
    parser.add_argument("--cluster-s", type=float, default=5)
    parser.add_argument("--instance-s", type=float, default=8)
    parser.add_argument("--alb-s", type=float, default=3)
    parser.add_argument("--service-s", type=float, default=3)
    parser.add_argument("--poll", type=float, default=0.25, help="MLFLOW_ECS_POLL_INTERVAL")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--timeline", action="store_true", help="when each kind of write first ran")
    opts = parser.parse_args()

    port = free_port()
    os.environ.update(
        MOTO_IAM_LOAD_MANAGED_POLICIES="true",
        MOTO_ECS_SERVICE_RUNNING="1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="eu-west-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        OAUTH2_PROXY_CLIENT_ID="bench-client-id",
        OAUTH2_PROXY_CLIENT_SECRET="bench-client-secret",
        MLFLOW_ECS_POLL_INTERVAL=str(opts.poll),
    )
    from mlflow_ecs import aws

    # moto in its own process, like AWS on the other side of a network: sharing this process
    # would make the tool's threads and the emulator's compete for one interpreter lock.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    delays = {
        "cluster": opts.cluster_s,
        "instance": opts.instance_s,
        "alb": opts.alb_s,
        "service": opts.service_s,
    }
    sim = Simulator(opts.rtt_ms / 1000, delays)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            warm_up(tmp)
            aws.GLOBAL_HOOKS[:] = sim.hooks()
            cfg = Path(tmp, "bench.toml")
            cfg.write_text(CONFIG)
            c = ["--config", str(cfg)]
            up_path = opts.cluster_s + opts.instance_s + opts.service_s
            down_path = opts.service_s + max(opts.instance_s + opts.cluster_s, opts.alb_s)
            rows = [
                measure(sim, "up (fresh)", [*c, "up"], up_path),
                measure(sim, "up (no change)", [*c, "up"], None),
                measure(sim, "plan", [*c, "plan"], None),
                measure(sim, "status", [*c, "status", "--json"], None),
                measure(sim, "down", [*c, "down", "--yes"], down_path),
            ]
    finally:
        aws.GLOBAL_HOOKS.clear()
        server.terminate()
        server.wait(timeout=30)
    help_s = help_time()
    if opts.json:
        print(json.dumps({"rows": rows, "help_s": round(help_s, 3), "args": vars(opts)}, indent=2))
        return 0
    print(
        f"rtt {opts.rtt_ms:g} ms; delays cluster {opts.cluster_s:g}s, writer {opts.instance_s:g}s, "
        f"ALB {opts.alb_s:g}s, service {opts.service_s:g}s; poll {opts.poll:g}s"
    )
    print(f"{'command':<16} {'exit':>4} {'wall s':>7} {'calls':>6} {'critical s':>10} {'ratio':>6}")
    for r in rows:
        crit = f"{r['critical_path_s']:.2f}" if "critical_path_s" in r else "-"
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else "-"
        print(
            f"{r['command']:<16} {r['exit']:>4} {r['wall_s']:>7.2f} {r['api_calls']:>6} "
            f"{crit:>10} {ratio:>6}"
        )
    print(f"{'--help':<16} {'':>4} {help_s:>7.3f}")
    for r in rows:
        print(f"\n{r['command']} calls: " + ", ".join(f"{k} {v}" for k, v in r["calls"].items()))
        if opts.timeline:
            print(
                "  first writes (s): "
                + ", ".join(f"{k} {v}" for k, v in r["first_write_s"].items())
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
