"""The ECS cluster the service runs in."""

from __future__ import annotations

from typing import Any

from ..aws import ecs_tags, tag_dict
from ..changes import Change, change, pending, tag_diffs
from .base import (
    CREATED,
    CREATING,
    DELETED,
    DELETING,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    gone_ok,
    require_owned,
    sync_ecs_tags,
)


def find(sc: StepContext) -> dict[str, Any] | None:
    name = sc.names.ecs_cluster
    with aws_action(f"find the ECS cluster {name}"):
        got = sc.aws.ecs.describe_clusters(clusters=[name], include=["TAGS"])
    active = [c for c in got.get("clusters", []) if c.get("status") != "INACTIVE"]
    if not active:
        return None
    cluster = dict(active[0])
    require_owned(
        "ECS cluster", name, tag_dict(cluster.get("tags"), "key", "value"), sc.names.stack
    )
    return cluster


def compare(sc: StepContext, cluster: dict[str, Any] | None) -> Change:
    name = sc.names.ecs_cluster
    if cluster is None:
        return change("ecs cluster", name, [], created=True)
    return change(
        "ecs cluster", name, tag_diffs(sc.tags, tag_dict(cluster.get("tags"), "key", "value"))
    )


def plan(sc: StepContext) -> list[Change]:
    cluster = sc.peek("cluster", lambda: find(sc))
    sc.out.cluster_arn = cluster["clusterArn"] if cluster else pending("ECS cluster")
    return [compare(sc, cluster)]


def ensure(sc: StepContext) -> None:
    name = sc.names.ecs_cluster
    cluster = sc.take("cluster", lambda: find(sc))
    planned = compare(sc, cluster)
    ecs = sc.aws.ecs
    if cluster is None:
        # Only when missing: a second create_cluster may reset an existing one.
        sc.report("ecs cluster", CREATING, name)
        with aws_action(f"create the ECS cluster {name}"):
            arn = ecs.create_cluster(clusterName=name, tags=ecs_tags(sc.tags))["cluster"][
                "clusterArn"
            ]
        sc.out.cluster_arn = arn
        sc.report("ecs cluster", CREATED, name)
        return
    sc.out.cluster_arn = cluster["clusterArn"]
    if not planned.changed:
        sc.report("ecs cluster", UNCHANGED, name)
        return
    sc.report("ecs cluster", UPDATING, f"{name}: {planned.summary()}")
    with aws_action(f"tag the ECS cluster {name}"):
        sync_ecs_tags(sc, sc.out.cluster_arn, planned)
    sc.report("ecs cluster", UPDATED, name)


def describe(sc: StepContext) -> list[Resource]:
    cluster = sc.take("cluster", lambda: find(sc))
    if cluster is None:
        return [Resource("ecs cluster", sc.names.ecs_cluster)]
    sc.out.cluster_arn = cluster["clusterArn"]
    return [
        Resource(
            "ecs cluster", sc.names.ecs_cluster, cluster["clusterArn"], cluster["status"].lower()
        )
    ]


def delete(sc: StepContext) -> None:
    name = sc.names.ecs_cluster
    if sc.take("cluster", lambda: find(sc)) is None:
        sc.report("ecs cluster", DELETED, "already gone")
        return
    sc.report("ecs cluster", DELETING, name)
    with aws_action(f"delete the ECS cluster {name}"):
        gone_ok({"ClusterNotFoundException"}, lambda: sc.aws.ecs.delete_cluster(cluster=name))
    sc.report("ecs cluster", DELETED, name)
