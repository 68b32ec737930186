"""The artifact bucket: public access block, encryption, versioning, tags, TLS-only policy.

Kept by `down` unless --delete-data; then every object version goes with it.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

from botocore.exceptions import ClientError

from .. import render
from ..aws import tag_dict, tag_list
from ..changes import NONE, Change, Diff, change, has_tags, tag_diffs
from ..errors import AwsError, NotOwnedError, error_code
from .base import (
    CREATED,
    CREATING,
    DELETED,
    DELETING,
    KEPT,
    UNCHANGED,
    UPDATED,
    UPDATING,
    Resource,
    StepContext,
    aws_action,
    missing_on,
    require_owned,
)


def _exists(sc: StepContext) -> bool:
    name = sc.names.bucket
    try:
        sc.aws.s3.head_bucket(Bucket=name)
        return True
    except ClientError as exc:
        code = error_code(exc)
        if code in {"404", "NoSuchBucket", "NotFound"}:
            return False
        if code in {"403", "AccessDenied"}:
            raise NotOwnedError(
                f"The bucket name {name!r} is taken by another AWS account "
                "(or you may not read it).",
                "Set artifacts.bucket to another globally unique name.",
            ) from None
        raise


def _tags(sc: StepContext) -> dict[str, str]:
    got = missing_on(
        {"NoSuchTagSet", "NoSuchTagSetError"},
        lambda: sc.aws.s3.get_bucket_tagging(Bucket=sc.names.bucket),
    )
    return tag_dict(got["TagSet"] if got else [])


def find(sc: StepContext) -> dict[str, str] | None:
    """The bucket's tags, or None when it does not exist. Raises when it is not ours."""
    with aws_action(f"find the bucket {sc.names.bucket}"):
        if not _exists(sc):
            return None
        tags = _tags(sc)
    require_owned("bucket", sc.names.bucket, tags, sc.names.stack)
    return tags


def compare(
    sc: StepContext, tags: dict[str, str] | None, settings: dict[str, Any] | None
) -> Change:
    name = sc.names.bucket
    if tags is None or settings is None:
        return change("bucket", name, [], created=True, note=_NEW)
    return change("bucket", name, setting_diffs(sc, settings) + tag_diffs(sc.tags, tags))


_NEW = "public access blocked, encrypted (SSE-S3), versioned, TLS-only policy"


def plan(sc: StepContext) -> list[Change]:
    sc.out.bucket = sc.names.bucket
    tags = sc.peek("bucket", lambda: find(sc))
    settings = sc.peek("bucket_settings", lambda: read_settings(sc)) if tags is not None else None
    return [compare(sc, tags, settings)]


def ensure(sc: StepContext) -> None:
    name = sc.names.bucket
    sc.out.bucket = name
    tags = sc.take("bucket", lambda: find(sc))
    s3 = sc.aws.s3
    created = tags is None
    if tags is None:
        sc.report("bucket", CREATING, name)
        with aws_action(f"create the bucket {name}"):
            args: dict[str, Any] = {"Bucket": name}
            if sc.aws.region != "us-east-1":  # us-east-1 rejects a LocationConstraint
                args["CreateBucketConfiguration"] = {"LocationConstraint": sc.aws.region}
            s3.create_bucket(**args)
            _tag_new(sc)
        tags = dict(sc.tags)
        sc.found.pop("bucket_settings", None)  # read before it existed
    settings = sc.take("bucket_settings", lambda: read_settings(sc))
    if settings is None:
        raise AwsError(f"The bucket {name} vanished while being set up.", "Run `up` again.")
    planned = compare(sc, tags, settings)
    if not planned.changed:
        sc.report("bucket", CREATED if created else UNCHANGED, name)
        return
    sc.report("bucket", UPDATING, f"{name}: {planned.summary()}")
    with aws_action(f"configure the bucket {name}"):
        for setting in _APPLY:  # in this order: the policy, when it changes, is the last
            if (setting == "tags" and has_tags(planned)) or planned.has(setting):
                _APPLY[setting](sc)
    sc.report("bucket", CREATED if created else UPDATED, name)


def _tag_new(sc: StepContext) -> None:
    """Tag a bucket just made, first of all: untagged, a later run could not tell it from
    someone else's and would refuse it. If tagging fails, the (empty) bucket goes again."""
    try:
        _APPLY["tags"](sc)
    except BaseException:
        with suppress(ClientError):
            sc.aws.s3.delete_bucket(Bucket=sc.names.bucket)
        raise


def read_settings(sc: StepContext) -> dict[str, Any] | None:
    """The bucket's public access block, encryption, versioning and policy (None: no bucket)."""
    s3, name = sc.aws.s3, sc.names.bucket
    with aws_action(f"read the settings of the bucket {name}"):
        try:
            block = missing_on(
                {"NoSuchPublicAccessBlockConfiguration"},
                lambda: s3.get_public_access_block(Bucket=name),
            )
        except ClientError as exc:
            if error_code(exc) in {"NoSuchBucket", "404"}:
                return None
            raise
        enc = missing_on(
            {"ServerSideEncryptionConfigurationNotFoundError"},
            lambda: s3.get_bucket_encryption(Bucket=name),
        )
        policy = missing_on({"NoSuchBucketPolicy"}, lambda: s3.get_bucket_policy(Bucket=name))
        return {
            "block": block["PublicAccessBlockConfiguration"] if block else None,
            "encryption": enc["ServerSideEncryptionConfiguration"]["Rules"] if enc else [],
            "versioning": s3.get_bucket_versioning(Bucket=name).get("Status"),
            "policy": json.loads(policy["Policy"]) if policy else None,
        }


def _block_text(block: dict[str, Any] | None) -> str:
    if not block:
        return NONE
    off = [k for k in sorted(render.PUBLIC_ACCESS_BLOCK) if not block.get(k)]
    return "all four blocked" if not off else "not blocked: " + ", ".join(off)


def setting_diffs(sc: StepContext, have: dict[str, Any]) -> list[Diff]:
    """The settings that differ from what they should be."""
    diffs = []
    if have["block"] != render.PUBLIC_ACCESS_BLOCK:
        diffs.append(Diff("public access block", _block_text(have["block"]), "all four blocked"))
    rules = have["encryption"]
    if not rules or "ApplyServerSideEncryptionByDefault" not in rules[0]:
        diffs.append(Diff("encryption", None, "SSE-S3 (AES256)"))
    if have["versioning"] != "Enabled":
        diffs.append(Diff("versioning", have["versioning"], "Enabled"))
    if have["policy"] != render.bucket_policy(sc.names.bucket):
        old = "a different policy" if have["policy"] else None
        diffs.append(Diff("policy", old, "TLS-only (deny aws:SecureTransport = false)"))
    return diffs


_APPLY = {
    "public access block": lambda sc: sc.aws.s3.put_public_access_block(
        Bucket=sc.names.bucket, PublicAccessBlockConfiguration=render.PUBLIC_ACCESS_BLOCK
    ),
    "encryption": lambda sc: sc.aws.s3.put_bucket_encryption(
        Bucket=sc.names.bucket, ServerSideEncryptionConfiguration=render.BUCKET_ENCRYPTION
    ),
    "versioning": lambda sc: sc.aws.s3.put_bucket_versioning(
        Bucket=sc.names.bucket, VersioningConfiguration={"Status": "Enabled"}
    ),
    "tags": lambda sc: sc.aws.s3.put_bucket_tagging(
        Bucket=sc.names.bucket, Tagging={"TagSet": tag_list(sc.tags)}
    ),
    "policy": lambda sc: sc.aws.s3.put_bucket_policy(
        Bucket=sc.names.bucket, Policy=render.to_json(render.bucket_policy(sc.names.bucket))
    ),
}


def describe(sc: StepContext) -> list[Resource]:
    tags = sc.take("bucket", lambda: find(sc))
    if tags is None:
        return [Resource("bucket", sc.names.bucket)]
    sc.out.bucket = sc.names.bucket
    return [Resource("bucket", sc.names.bucket, f"s3://{sc.names.bucket}", "present")]


def delete(sc: StepContext) -> None:
    name = sc.names.bucket
    if sc.take("bucket", lambda: find(sc)) is None:
        sc.report("bucket", DELETED, "already gone")
        return
    if not sc.delete_data:
        sc.report("bucket", KEPT, f"s3://{name} and its objects (use --delete-data to remove)")
        return
    sc.report("bucket", DELETING, f"{name} with every object version")
    s3 = sc.aws.s3
    with aws_action(f"delete the bucket {name}"):
        # The TLS-only policy goes first: moto evaluates its Deny on every object call.
        s3.delete_bucket_policy(Bucket=name)
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            keys = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]
        s3.delete_bucket(Bucket=name)
    sc.report("bucket", DELETED, name)
