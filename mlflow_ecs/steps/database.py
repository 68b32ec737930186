"""Aurora MySQL Serverless v2: subnet group, encrypted cluster, one db.serverless writer.

`start` creates (or restores from the stack's latest final snapshot) and returns at once;
`finish` waits for the cluster, creates the writer, waits for it. The engine runs `finish`
in the background so the slow part overlaps the other steps.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ..aws import tag_dict, tag_list
from ..changes import REPLACE, Change, Diff, change, pending, tag_diffs, tags_of
from ..config import DB_PORT
from ..errors import UsageError
from . import secrets
from .base import (
    CREATED,
    CREATING,
    DELETED,
    DELETING,
    KEPT,
    READY,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    gone_ok,
    in_parallel,
    missing_on,
    require_owned,
    retry_on,
    wait_until,
)

ENGINE = "aurora-mysql"
INSTANCE_CLASS = "db.serverless"
RESTORED_FROM_TAG = "mlflow-ecs:restored-from"
CLUSTER_MISSING = {"DBClusterNotFoundFault"}
INSTANCE_MISSING = {"DBInstanceNotFound", "DBInstanceNotFoundFault"}
SUBNET_GROUP_MISSING = {"DBSubnetGroupNotFoundFault"}
FAILED_STATES = {"failed", "inaccessible-encryption-credentials", "incompatible-parameters"}


def find_cluster(sc: StepContext) -> dict[str, Any] | None:
    with aws_action(f"find the database cluster {sc.names.db_cluster}"):
        got = missing_on(
            CLUSTER_MISSING,
            lambda: sc.aws.rds.describe_db_clusters(DBClusterIdentifier=sc.names.db_cluster),
        )
    clusters = got["DBClusters"] if got else []
    if not clusters:
        return None
    cluster = dict(clusters[0])
    require_owned(
        "database cluster", sc.names.db_cluster, tag_dict(cluster.get("TagList")), sc.names.stack
    )
    return cluster


def find_instance(sc: StepContext) -> dict[str, Any] | None:
    with aws_action(f"find the database writer {sc.names.db_instance}"):
        got = missing_on(
            INSTANCE_MISSING,
            lambda: sc.aws.rds.describe_db_instances(DBInstanceIdentifier=sc.names.db_instance),
        )
    instances = got["DBInstances"] if got else []
    return dict(instances[0]) if instances else None


def latest_final_snapshot(sc: StepContext) -> dict[str, Any] | None:
    """The newest final snapshot `down` left for this stack (what `up` restores from)."""
    with aws_action("look for the stack's final database snapshots"):
        snaps = sc.aws.rds.describe_db_cluster_snapshots(
            DBClusterIdentifier=sc.names.db_cluster, SnapshotType="manual"
        )["DBClusterSnapshots"]
    ours = [
        s
        for s in snaps
        if s["DBClusterSnapshotIdentifier"].startswith(sc.names.snapshot_prefix)
        and s.get("Status", "available") == "available"
    ]
    ours.sort(
        key=lambda s: (
            s.get("SnapshotCreateTime") or dt.datetime.min,
            s["DBClusterSnapshotIdentifier"],
        )
    )
    return dict(ours[-1]) if ours else None


def _scaling(sc: StepContext) -> dict[str, float]:
    d = sc.cfg.database
    return {"MinCapacity": float(d.min_capacity), "MaxCapacity": float(d.max_capacity)}


def start(sc: StepContext) -> None:
    """Subnet group and cluster: create or update, without waiting."""
    _ensure_subnet_group(sc)
    cluster = sc.take("db_cluster", lambda: find_cluster(sc))
    if cluster is None:
        cluster = _create_cluster(sc)
        cluster["Status"] = "creating"
    else:
        _update_cluster(sc, cluster)
    sc.out.db_endpoint = cluster.get("Endpoint", "")
    sc.out.db_status = str(cluster.get("Status", ""))


def plan(sc: StepContext) -> list[Change]:
    group = sc.peek("db_subnet_group", lambda: find_subnet_group(sc))
    cluster = sc.peek("db_cluster", lambda: find_cluster(sc))
    snapshot = sc.peek("db_snapshot", lambda: latest_final_snapshot(sc)) if not cluster else None
    instance = sc.peek("db_instance", lambda: find_instance(sc))
    sc.out.db_endpoint = cluster.get("Endpoint", "") if cluster else pending("cluster endpoint")
    return [
        compare_subnet_group(sc, group),
        compare_cluster(sc, cluster, snapshot),
        compare_instance(sc, instance),
    ]


def find_subnet_group(sc: StepContext) -> dict[str, Any] | None:
    """The DB subnet group with its tags (its describe carries none: one more call), owned."""
    name = sc.names.db_subnet_group
    with aws_action(f"find the DB subnet group {name}"):
        got = missing_on(
            SUBNET_GROUP_MISSING,
            lambda: sc.aws.rds.describe_db_subnet_groups(DBSubnetGroupName=name),
        )
    if got is None:
        return None
    return dict(got["DBSubnetGroups"][0]) | {"TagList": _subnet_group_tags(sc)}


def compare_subnet_group(sc: StepContext, group: dict[str, Any] | None) -> Change:
    name, want = sc.names.db_subnet_group, sorted(sc.out.private_subnets)
    if group is None:
        return change("db subnet group", name, [Diff("subnets", None, want)], created=True)
    diffs = []
    have = sorted(s["SubnetIdentifier"] for s in group.get("Subnets", []))
    if have != want:
        diffs.append(Diff("subnets", have, want))
    return change(
        "db subnet group", name, diffs + tag_diffs(sc.tags, tag_dict(group.get("TagList")))
    )


def _ensure_subnet_group(sc: StepContext) -> None:
    rds, name = sc.aws.rds, sc.names.db_subnet_group
    group = sc.take("db_subnet_group", lambda: find_subnet_group(sc))
    planned = compare_subnet_group(sc, group)
    if not planned.changed:
        return
    with aws_action(f"set up the DB subnet group {name}"):
        if group is None:
            sc.report("db subnet group", CREATING, name)
            rds.create_db_subnet_group(
                DBSubnetGroupName=name,
                DBSubnetGroupDescription=f"mlflow-ecs {sc.names.stack}: private subnets",
                SubnetIds=sorted(sc.out.private_subnets),
                Tags=tag_list(sc.tags),
            )
            sc.report("db subnet group", CREATED, name)
            return
        sc.report("db subnet group", UPDATING, f"{name}: {planned.summary()}")
        if planned.has("subnets"):
            rds.modify_db_subnet_group(
                DBSubnetGroupName=name, SubnetIds=sorted(sc.out.private_subnets)
            )
        _sync_tags(sc, _subnet_group_arn(sc), planned)
    sc.report("db subnet group", UPDATED, name)


def _sync_tags(sc: StepContext, arn: str, planned: Change) -> None:
    to_set, to_remove = tags_of(planned)
    if to_set:
        sc.aws.rds.add_tags_to_resource(ResourceName=arn, Tags=tag_list(to_set))
    if to_remove:
        sc.aws.rds.remove_tags_from_resource(ResourceName=arn, TagKeys=to_remove)


def _create_cluster(sc: StepContext) -> dict[str, Any]:
    d, name = sc.cfg.database, sc.names.db_cluster
    snapshot = sc.take("db_snapshot", lambda: latest_final_snapshot(sc))
    common: dict[str, Any] = {
        "DBClusterIdentifier": name,
        "Engine": ENGINE,
        "EngineVersion": d.engine_version,
        "DBSubnetGroupName": sc.names.db_subnet_group,
        "VpcSecurityGroupIds": [sc.out.security_groups["db"]],
        "Port": DB_PORT,
        "DeletionProtection": d.deletion_protection,
        "CopyTagsToSnapshot": True,
        "ServerlessV2ScalingConfiguration": _scaling(sc),
    }
    rds = sc.aws.rds
    if snapshot:
        snap_id = snapshot["DBClusterSnapshotIdentifier"]
        sc.report("database cluster", CREATING, f"{name}, restoring your data from {snap_id}")
        tags = tag_list({**sc.tags, RESTORED_FROM_TAG: snap_id})
        with aws_action(f"restore the database cluster {name} from {snap_id}"):
            cluster = rds.restore_db_cluster_from_snapshot(
                SnapshotIdentifier=snap_id,
                Tags=tags,
                **common,
            )["DBCluster"]
            # The snapshot carries the old master password; make it the stored one again.
            rds.modify_db_cluster(
                DBClusterIdentifier=name,
                MasterUserPassword=secrets.db_password(sc),
                BackupRetentionPeriod=d.backup_retention_days,
                ApplyImmediately=True,
            )
        return dict(cluster)
    sc.report("database cluster", CREATING, f"{name} (Aurora MySQL {d.engine_version})")
    with aws_action(f"create the database cluster {name}"):
        cluster = rds.create_db_cluster(
            DatabaseName=d.name,
            MasterUsername=d.username,
            MasterUserPassword=secrets.db_password(sc),
            StorageEncrypted=True,
            BackupRetentionPeriod=d.backup_retention_days,
            Tags=tag_list(sc.tags),
            **common,
        )["DBCluster"]
    return dict(cluster)


def _subnet_group_arn(sc: StepContext) -> str:
    return f"arn:aws:rds:{sc.aws.region}:{sc.aws.account_id}:subgrp:{sc.names.db_subnet_group}"


def _subnet_group_tags(sc: StepContext) -> list[Any]:
    with aws_action("read the DB subnet group's tags"):
        got = sc.aws.rds.list_tags_for_resource(ResourceName=_subnet_group_arn(sc))
    tags = list(got.get("TagList", []))
    require_owned("DB subnet group", sc.names.db_subnet_group, tag_dict(tags), sc.names.stack)
    return tags


def version_key(version: str) -> tuple[int, ...]:
    """'8.0.mysql_aurora.3.08.2' -> (8, 0, 3, 8, 2): for telling an upgrade from a downgrade."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def compare_cluster(
    sc: StepContext, cluster: dict[str, Any] | None, snapshot: dict[str, Any] | None = None
) -> Change:
    d, name = sc.cfg.database, sc.names.db_cluster
    if cluster is None:
        note = f"Aurora MySQL {d.engine_version}, {d.min_capacity}-{d.max_capacity} ACU"
        if snapshot:
            note = f"restored from {snapshot['DBClusterSnapshotIdentifier']} (your data)"
        return change("database cluster", name, [], created=True, note=note)
    tags = tag_diffs({**sc.tags, **_kept_tags(cluster)}, tag_dict(cluster.get("TagList")))
    diffs = _setting_diffs(sc, cluster) + tags
    fixed = _fixed_diffs(sc, cluster)
    if fixed:
        return Change(
            "database cluster",
            name,
            REPLACE,
            (*fixed, *diffs),
            blocked=f"{' and '.join(f.attribute for f in fixed)} cannot change on an existing "
            "cluster, and a new one would be empty: put back the old value (your data is in "
            "this cluster).",
        )
    return change("database cluster", name, diffs)


def _setting_diffs(sc: StepContext, cluster: dict[str, Any]) -> list[Diff]:
    """What modify_db_cluster can change in place."""
    d = sc.cfg.database
    scaling = cluster.get("ServerlessV2ScalingConfiguration", {})
    diffs = [
        Diff(label, scaling.get(key), want)
        for key, label, want in (
            ("MinCapacity", "min capacity", float(d.min_capacity)),
            ("MaxCapacity", "max capacity", float(d.max_capacity)),
        )
        if float(scaling.get(key, -1)) != want
    ]
    protected = bool(cluster.get("DeletionProtection"))
    if protected != d.deletion_protection:
        diffs.append(Diff("deletion protection", protected, d.deletion_protection))
    days = cluster.get("BackupRetentionPeriod")
    if days != d.backup_retention_days:
        diffs.append(Diff("backup retention days", days, d.backup_retention_days))
    have = str(cluster.get("EngineVersion", ""))
    # AWS upgrades minor versions itself, and never downgrades: only an upgrade is a change.
    if have != d.engine_version and version_key(d.engine_version) > version_key(have):
        diffs.append(Diff("engine version", have, d.engine_version))
    groups = sorted(g["VpcSecurityGroupId"] for g in cluster.get("VpcSecurityGroups", []))
    if "db" in sc.out.security_groups and groups != [sc.out.security_groups["db"]]:
        diffs.append(Diff("security groups", groups, [sc.out.security_groups["db"]]))
    return diffs


def _fixed_diffs(sc: StepContext, cluster: dict[str, Any]) -> list[Diff]:
    """What no call can change on an existing cluster."""
    d = sc.cfg.database
    return [
        Diff(label, cluster.get(key), want)
        for key, label, want in (
            ("DatabaseName", "database.name", d.name),
            ("MasterUsername", "database.username", d.username),
        )
        if cluster.get(key) not in (None, want)
    ]


_MODIFY = {
    "deletion protection": "DeletionProtection",
    "backup retention days": "BackupRetentionPeriod",
    "engine version": "EngineVersion",
}


def _modify_args(sc: StepContext, planned: Change) -> dict[str, Any]:
    """modify_db_cluster arguments for the planned changes (empty: none)."""
    args: dict[str, Any] = {
        key: planned.get(label).new  # type: ignore[union-attr]
        for label, key in _MODIFY.items()
        if planned.has(label)
    }
    if planned.has("min capacity") or planned.has("max capacity"):
        args["ServerlessV2ScalingConfiguration"] = _scaling(sc)
    if planned.has("security groups"):
        args["VpcSecurityGroupIds"] = [sc.out.security_groups["db"]]
    return args


def _update_cluster(sc: StepContext, cluster: dict[str, Any]) -> None:
    name = sc.names.db_cluster
    planned = compare_cluster(sc, cluster)
    if planned.blocked:  # the engine refuses these before any change: never reached
        raise UsageError(f"database cluster {name}: {planned.blocked}")
    if not planned.changed:
        sc.report("database cluster", UNCHANGED, name)
        return
    sc.report("database cluster", UPDATING, f"{name}: {planned.summary()}")
    with aws_action(f"update the database cluster {name}"):
        if args := _modify_args(sc, planned):
            sc.aws.rds.modify_db_cluster(DBClusterIdentifier=name, ApplyImmediately=True, **args)
        _sync_tags(sc, cluster["DBClusterArn"], planned)
    sc.report("database cluster", UPDATED, name)


def _kept_tags(cluster: dict[str, Any]) -> dict[str, str]:
    tags = tag_dict(cluster.get("TagList"))
    return {RESTORED_FROM_TAG: tags[RESTORED_FROM_TAG]} if RESTORED_FROM_TAG in tags else {}


def compare_instance(sc: StepContext, instance: dict[str, Any] | None) -> Change:
    name = sc.names.db_instance
    if instance is None:
        return change("database writer", name, [], created=True, note=INSTANCE_CLASS)
    state = str(instance.get("DBInstanceStatus"))
    note = "" if state == "available" else f"{state}: up waits for it"
    return change(
        "database writer", name, tag_diffs(sc.tags, tag_dict(instance.get("TagList"))), note=note
    )


def finish(sc: StepContext) -> None:
    """Wait for the cluster, make sure the writer exists, wait for it. Runs in the background.

    Waits only for what is not already available (a re-run reads each once, in start/prefetch).
    """
    if sc.out.db_status != "available":
        cluster = wait_until(
            sc,
            "database cluster",
            lambda: find_cluster(sc) or {"Status": "missing"},
            done=lambda c: c.get("Status") == "available",
            describe=lambda c: str(c.get("Status")),
            failed=lambda c: (
                f"status {c['Status']}" if c.get("Status") in FAILED_STATES | {"missing"} else None
            ),
        )
        sc.out.db_endpoint = cluster.get("Endpoint", sc.out.db_endpoint)
        sc.report("database cluster", READY, sc.out.db_endpoint)
    instance = sc.take("db_instance", lambda: find_instance(sc))
    planned = compare_instance(sc, instance)
    if instance is not None and planned.changed:
        sc.report("database writer", UPDATING, f"{sc.names.db_instance}: {planned.summary()}")
        with aws_action(f"tag the database writer {sc.names.db_instance}"):
            _sync_tags(sc, instance["DBInstanceArn"], planned)
        sc.report("database writer", UPDATED, sc.names.db_instance)
    if instance is not None and instance.get("DBInstanceStatus") == "available":
        if not planned.changed:
            sc.report("database writer", UNCHANGED, sc.names.db_instance)
        return
    if instance is None:
        sc.report("database writer", CREATING, f"{sc.names.db_instance} ({INSTANCE_CLASS})")
        with aws_action(f"create the database writer {sc.names.db_instance}"):
            sc.aws.rds.create_db_instance(
                DBInstanceIdentifier=sc.names.db_instance,
                DBClusterIdentifier=sc.names.db_cluster,
                DBInstanceClass=INSTANCE_CLASS,
                Engine=ENGINE,
                PubliclyAccessible=False,
                Tags=tag_list(sc.tags),
            )
    wait_until(
        sc,
        "database writer",
        lambda: find_instance(sc) or {"DBInstanceStatus": "missing"},
        done=lambda i: i.get("DBInstanceStatus") == "available",
        describe=lambda i: str(i.get("DBInstanceStatus")),
        failed=lambda i: (
            f"status {i['DBInstanceStatus']}"
            if i.get("DBInstanceStatus") in FAILED_STATES
            else None
        ),
    )
    sc.report("database writer", READY, sc.names.db_instance)


def describe(sc: StepContext) -> list[Resource]:
    cluster = sc.take("db_cluster", lambda: find_cluster(sc))
    instance = sc.take("db_instance", lambda: find_instance(sc))
    rows = []
    if cluster is None:
        rows.append(Resource("database cluster", sc.names.db_cluster))
    else:
        sc.out.db_endpoint = cluster.get("Endpoint", "")
        scaling = cluster.get("ServerlessV2ScalingConfiguration", {})
        acu = f"{scaling.get('MinCapacity')}-{scaling.get('MaxCapacity')}"
        detail = f"{cluster.get('EngineVersion')}, ACU {acu}"
        restored = tag_dict(cluster.get("TagList")).get(RESTORED_FROM_TAG)
        if restored:
            detail += f", restored from {restored}"
        rows.append(
            Resource(
                "database cluster",
                sc.names.db_cluster,
                sc.out.db_endpoint,
                cluster["Status"],
                detail,
            )
        )
    if instance is None:
        rows.append(Resource("database writer", sc.names.db_instance))
    else:
        rows.append(
            Resource(
                "database writer",
                sc.names.db_instance,
                instance["DBInstanceIdentifier"],
                instance["DBInstanceStatus"],
                INSTANCE_CLASS,
            )
        )
    return rows


def check_deletable(sc: StepContext) -> dict[str, Any] | None:
    """Before `down` changes anything: refuse a cluster with deletion protection."""
    cluster = sc.take("db_cluster", lambda: find_cluster(sc))
    sc.found["db_cluster"] = cluster  # delete() comes later and reuses this read
    if cluster is not None and cluster.get("DeletionProtection"):
        raise UsageError(
            f"The database cluster {sc.names.db_cluster} has deletion protection on; "
            "nothing was changed.",
            "Set database.deletion_protection = false, run `mlflow-ecs up`, then `down` again.",
        )
    return cluster


def final_snapshot_id(sc: StepContext, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{sc.names.snapshot_prefix}{now:%Y%m%d-%H%M%S}"


def delete(sc: StepContext) -> None:
    rds = sc.aws.rds
    cluster = sc.take("db_cluster", lambda: find_cluster(sc))
    # The subnet group is read now, beside the writer, rather than after the long waits.
    group, instance = in_parallel(
        [lambda: find_subnet_group(sc), lambda: sc.take("db_instance", lambda: find_instance(sc))]
    )
    sc.found["db_subnet_group"] = group
    if instance is not None:
        sc.report("database writer", DELETING, sc.names.db_instance)
        with aws_action(f"delete the database writer {sc.names.db_instance}"):
            gone_ok(
                INSTANCE_MISSING,
                lambda: rds.delete_db_instance(DBInstanceIdentifier=sc.names.db_instance),
            )
        # AWS refuses to delete a cluster until its writer is gone (minutes): wait for it.
        wait_until(
            sc,
            "database writer",
            lambda: find_instance(sc) or {"DBInstanceStatus": "deleted"},
            done=lambda i: i.get("DBInstanceStatus") == "deleted",
            describe=lambda i: str(i.get("DBInstanceStatus")),
        )
    sc.report("database writer", DELETED, sc.names.db_instance)
    if cluster is not None:
        _delete_cluster(sc)
    else:
        sc.report("database cluster", DELETED, "already gone")
    if sc.delete_data:
        _delete_snapshots(sc)
    if sc.take("db_subnet_group", lambda: find_subnet_group(sc)) is None:
        sc.report("db subnet group", DELETED, "already gone")
        return
    with aws_action(f"delete the DB subnet group {sc.names.db_subnet_group}"):
        retry_on(
            sc,
            {"InvalidDBSubnetGroupStateFault"},
            lambda: gone_ok(
                SUBNET_GROUP_MISSING,
                lambda: rds.delete_db_subnet_group(DBSubnetGroupName=sc.names.db_subnet_group),
            ),
            attempts=30,
        )
    sc.report("db subnet group", DELETED, sc.names.db_subnet_group)


def _delete_cluster(sc: StepContext) -> None:
    rds, name = sc.aws.rds, sc.names.db_cluster
    args: dict[str, Any] = {"DBClusterIdentifier": name}
    if sc.delete_data:
        args["SkipFinalSnapshot"] = True
        sc.report("database cluster", DELETING, f"{name}, without a final snapshot")
    else:
        args["FinalDBSnapshotIdentifier"] = final_snapshot_id(sc)
        sc.report(
            "database cluster",
            DELETING,
            f"{name}, final snapshot {args['FinalDBSnapshotIdentifier']}",
        )
    with aws_action(f"delete the database cluster {name}"):
        # The writer must be deleting first; it takes a moment to leave the cluster.
        retry_on(
            sc,
            {"InvalidDBClusterStateFault", "DBClusterToBeDeletedHasActiveMembers"},
            lambda: gone_ok(CLUSTER_MISSING, lambda: rds.delete_db_cluster(**args)),
            attempts=60,
        )
    wait_until(
        sc,
        "database cluster",
        lambda: find_cluster(sc) or {"Status": "deleted"},
        done=lambda c: c.get("Status") == "deleted",
        describe=lambda c: str(c.get("Status")),
    )
    if sc.delete_data:
        sc.report("database cluster", DELETED, name)
    else:
        sc.report(
            "database cluster",
            KEPT,
            f"final snapshot {args['FinalDBSnapshotIdentifier']}: `up` restores it",
        )


def _delete_snapshots(sc: StepContext) -> None:
    while (snap := latest_final_snapshot(sc)) is not None:
        sid = snap["DBClusterSnapshotIdentifier"]
        sc.report("database snapshot", DELETING, sid)
        with aws_action(f"delete the snapshot {sid}"):
            sc.aws.rds.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=sid)
        sc.report("database snapshot", DELETED, sid)
