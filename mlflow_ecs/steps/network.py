"""VPC with 2 public + 2 private subnets in 2 AZs, internet gateway, public routes.

Or the user's own VPC and subnets: referenced, validated, never modified or deleted.
"""

from __future__ import annotations

import ipaddress
from functools import partial
from typing import Any

from ..aws import tag_dict, tag_list
from ..changes import REPLACE, Change, Diff, change, pending, tag_diffs
from ..config import OWNER_TAG
from ..errors import UsageError
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
    in_parallel,
    retry_on,
    sync_ec2_tags,
)

ROLE_TAG = "mlflow-ecs:role"
SUBNET_ROLES = ("public-a", "public-b", "private-a", "private-b")
ANYWHERE = "0.0.0.0/0"


def subnet_cidrs(vpc_cidr: str) -> dict[str, str]:
    """Split the VPC block in four equal subnets, one per role."""
    net = ipaddress.IPv4Network(vpc_cidr)
    blocks = list(net.subnets(prefixlen_diff=2))
    return {role: str(block) for role, block in zip(SUBNET_ROLES, blocks, strict=True)}


def _tag_spec(kind: str, tags: dict[str, str]) -> list[Any]:
    return [{"ResourceType": kind, "Tags": tag_list(tags)}]


def find_vpc(sc: StepContext) -> dict[str, Any] | None:
    ec2 = sc.aws.ec2
    if sc.cfg.network.vpc_id:
        with aws_action(f"find the VPC {sc.cfg.network.vpc_id}"):
            found = ec2.describe_vpcs(
                Filters=[{"Name": "vpc-id", "Values": [sc.cfg.network.vpc_id]}]
            )
    else:
        with aws_action("find the stack's VPC"):
            found = ec2.describe_vpcs(
                Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [sc.names.stack]}]
            )
    vpcs = found.get("Vpcs", [])
    return dict(vpcs[0]) if vpcs else None


def _vpc_tags(sc: StepContext) -> dict[str, str]:
    return {**sc.tags, "Name": sc.names.vpc}


def _subnet_tags(sc: StepContext, role: str) -> dict[str, str]:
    return {**sc.tags, "Name": f"{sc.names.stack}-{role}", ROLE_TAG: role}


def _gateway_tags(sc: StepContext) -> dict[str, str]:
    return {**sc.tags, "Name": sc.names.stack}


def _table_tags(sc: StepContext) -> dict[str, str]:
    return {**sc.tags, "Name": f"{sc.names.stack}-public", ROLE_TAG: "public"}


def compare_vpc(sc: StepContext, vpc: dict[str, Any] | None) -> Change:
    cidr = sc.cfg.network.cidr
    if vpc is None:
        return change("vpc", sc.names.vpc, [Diff("cidr", None, cidr)], created=True)
    tags = tag_diffs(_vpc_tags(sc), tag_dict(vpc.get("Tags")))
    if vpc["CidrBlock"] != cidr:
        return Change(
            "vpc",
            sc.names.vpc,
            REPLACE,
            (Diff("network.cidr", vpc["CidrBlock"], cidr), *tags),
            blocked="a VPC's address block cannot change, and a new VPC means a new stack: "
            f"put back cidr = {vpc['CidrBlock']!r}, or run `mlflow-ecs down` (your data is "
            "kept) and `up` again.",
        )
    return change("vpc", sc.names.vpc, tags)


def _subnets_by_role(found: list[Any], vpc_cidr: str) -> dict[str, Any]:
    """role -> subnet: by its role tag, else (the tag removed by hand) by its address block,
    so the tag is put back rather than a conflicting subnet made."""
    by_role = {tag_dict(s.get("Tags")).get(ROLE_TAG, ""): s for s in found}
    by_role.pop("", None)
    taken = {s["SubnetId"] for s in by_role.values()}
    for role, cidr in subnet_cidrs(vpc_cidr).items():
        match = [s for s in found if s["CidrBlock"] == cidr and s["SubnetId"] not in taken]
        if role not in by_role and match:
            by_role[role] = match[0]
    return by_role


def _public_tables(tables: list[Any], public: list[str]) -> list[Any]:
    """The public route table: by its role tag, else (the tag removed by hand) the VPC's own
    table (not the main one) that a public subnet is associated with."""
    tagged = [t for t in tables if tag_dict(t.get("Tags")).get(ROLE_TAG) == "public"]
    if tagged:
        return tagged
    return [
        t
        for t in tables
        if not any(a.get("Main") for a in t.get("Associations", []))
        and any(a.get("SubnetId") in public for a in t.get("Associations", []))
    ]


def compare_subnet(sc: StepContext, role: str, subnet: dict[str, Any] | None) -> Change:
    name = f"{sc.names.stack}-{role}"
    if subnet is None:
        cidr = subnet_cidrs(sc.cfg.network.cidr)[role]
        return change("subnet", name, [Diff("cidr", None, cidr)], created=True)
    return change("subnet", name, tag_diffs(_subnet_tags(sc, role), tag_dict(subnet.get("Tags"))))


def compare_gateway(sc: StepContext, gateways: list[Any]) -> Change:
    if not gateways:
        note = "new, or a detached one of the stack's, attached"
        return change("internet gateway", sc.names.stack, [], created=True, note=note)
    have = tag_dict(gateways[0].get("Tags"))
    return change("internet gateway", sc.names.stack, tag_diffs(_gateway_tags(sc), have))


def compare_table(sc: StepContext, tables: list[Any], igw: str, public: list[str]) -> Change:
    name = f"{sc.names.stack}-public"
    table = tables[0] if tables else {"Routes": [], "Associations": []}
    routes = {r.get("DestinationCidrBlock"): r.get("GatewayId") for r in table.get("Routes", [])}
    diffs = []
    if routes.get(ANYWHERE) != igw:
        diffs.append(Diff(f"route {ANYWHERE}", routes.get(ANYWHERE), igw))
    associated = {a.get("SubnetId") for a in table.get("Associations", [])}
    diffs += [Diff("associated subnet", None, s) for s in public if s not in associated]
    if not tables:
        return change("route table", name, diffs, created=True)
    return change(
        "route table", name, diffs + tag_diffs(_table_tags(sc), tag_dict(table.get("Tags")))
    )


def plan(sc: StepContext) -> list[Change]:
    if sc.cfg.network.vpc_id:
        subnets = sc.peek("given_subnets", lambda: read_given_subnets(sc))
        vpc = sc.peek("network", lambda: find_vpc(sc))
        check_given(sc, vpc, subnets)
        note = "yours: referenced, never modified"
        return [Change("vpc", sc.cfg.network.vpc_id, note=note, referenced=True)]
    vpc = sc.peek("network", lambda: find_vpc(sc))
    changes = [compare_vpc(sc, vpc)]
    vpc_id = sc.out.vpc_id = vpc["VpcId"] if vpc else pending("vpc")
    found = sc.peek("subnets", lambda: read_subnets(sc, vpc_id)) if vpc else []
    by_role = _subnets_by_role(found, vpc["CidrBlock"] if vpc else sc.cfg.network.cidr)
    ids = {}
    for role in SUBNET_ROLES:
        changes.append(compare_subnet(sc, role, by_role.get(role)))
        ids[role] = by_role[role]["SubnetId"] if role in by_role else pending(f"subnet {role}")
    sc.out.public_subnets = [ids["public-a"], ids["public-b"]]
    sc.out.private_subnets = [ids["private-a"], ids["private-b"]]
    gateways = sc.peek("gateways", lambda: read_gateways(sc, vpc_id)) if vpc else []
    tables = sc.peek("route_tables", lambda: read_route_tables(sc, vpc_id)) if vpc else []
    tables = _public_tables(tables, sc.out.public_subnets)
    igw = gateways[0]["InternetGatewayId"] if gateways else pending("internet gateway")
    changes.append(compare_gateway(sc, gateways))
    changes.append(compare_table(sc, tables, igw, sc.out.public_subnets))
    return changes


def ensure(sc: StepContext) -> None:
    if sc.cfg.network.vpc_id:
        _reference(sc)
        return
    vpc = sc.take("network", lambda: find_vpc(sc))
    planned = compare_vpc(sc, vpc)
    ec2 = sc.aws.ec2
    if vpc is None:
        sc.report("vpc", CREATING, sc.cfg.network.cidr)
        with aws_action(f"create the VPC {sc.names.vpc}"):
            vpc_id = ec2.create_vpc(
                CidrBlock=sc.cfg.network.cidr,
                TagSpecifications=_tag_spec("vpc", _vpc_tags(sc)),
            )["Vpc"]["VpcId"]
            ec2.get_waiter("vpc_available").wait(
                VpcIds=[vpc_id],
                WaiterConfig={"Delay": max(round(sc.poll.interval), 1), "MaxAttempts": 40},
            )
        cidr = sc.cfg.network.cidr
    else:
        vpc_id, cidr = vpc["VpcId"], vpc["CidrBlock"]
        if planned.blocked:  # the engine refuses these before any change: never reached
            raise UsageError(f"vpc {sc.names.vpc}: {planned.blocked}")
        if planned.changed:
            sc.report("vpc", UPDATING, f"{vpc_id}: {planned.summary()}")
            with aws_action(f"tag the VPC {vpc_id}"):
                sync_ec2_tags(sc, vpc_id, planned)
    sc.out.vpc_id, sc.out.vpc_owned = vpc_id, True
    subnets = _ensure_subnets(sc, vpc_id, cidr)
    sc.out.public_subnets = [subnets["public-a"], subnets["public-b"]]
    sc.out.private_subnets = [subnets["private-a"], subnets["private-b"]]
    sc.report("vpc", READY if vpc is None or planned.changed else UNCHANGED, vpc_id)


def ensure_internet(sc: StepContext) -> None:
    """Internet gateway and the public subnets' default route. Not needed by the database, so
    the engine runs it while the database is being created (the load balancer needs it)."""
    if sc.cfg.network.vpc_id:
        return
    igw = _ensure_gateway(sc, sc.out.vpc_id)
    _ensure_public_routes(sc, sc.out.vpc_id, igw, sc.out.public_subnets)


def read_given_subnets(sc: StepContext) -> list[Any]:
    ids = [*sc.cfg.network.public_subnet_ids, *sc.cfg.network.private_subnet_ids]
    with aws_action("find the given subnets"):
        found = sc.aws.ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": ids}])
    return list(found.get("Subnets", []))


def check_given(sc: StepContext, vpc: dict[str, Any] | None, found: list[Any]) -> None:
    """The user's VPC and subnets exist and fit (else a UsageError); fills the outputs."""
    n = sc.cfg.network
    if vpc is None:
        raise UsageError(
            f"network -> vpc_id: the VPC {n.vpc_id} does not exist in {sc.aws.region}.",
            "Give a VPC id of this account and region, or leave vpc_id empty to create one.",
        )
    ids = [*n.public_subnet_ids, *n.private_subnet_ids]
    subnets = {s["SubnetId"]: s for s in found}
    problems = [f"{i} does not exist" for i in ids if i not in subnets]
    problems += [
        f"{i} is in {s['VpcId']}, not {n.vpc_id}"
        for i, s in subnets.items()
        if s["VpcId"] != n.vpc_id
    ]
    for key, group in (("public", n.public_subnet_ids), ("private", n.private_subnet_ids)):
        zones = {subnets[i]["AvailabilityZone"] for i in group if i in subnets}
        if len(zones) < 2 and all(i in subnets for i in group):
            problems.append(f"the {key} subnets are all in {', '.join(zones)}: use two zones")
    if problems:
        raise UsageError(
            "network: the given subnets do not fit: " + "; ".join(problems) + ".",
            "Fix network -> public_subnet_ids / private_subnet_ids.",
        )
    sc.out.vpc_id, sc.out.vpc_owned = n.vpc_id, False
    sc.out.public_subnets = list(n.public_subnet_ids)
    sc.out.private_subnets = list(n.private_subnet_ids)


def _reference(sc: StepContext) -> None:
    """Check the user's VPC and subnets exist and fit; change nothing."""
    vpc = sc.take("network", lambda: find_vpc(sc))
    check_given(sc, vpc, sc.take("given_subnets", lambda: read_given_subnets(sc)))
    sc.report("vpc", KEPT, f"{sc.cfg.network.vpc_id} (yours: referenced, never modified)")


def _zones(sc: StepContext) -> list[str]:
    with aws_action("list availability zones"):
        zones = sc.aws.ec2.describe_availability_zones(
            Filters=[
                {"Name": "state", "Values": ["available"]},
                {"Name": "zone-type", "Values": ["availability-zone"]},
            ]
        )["AvailabilityZones"]
    names = sorted(z["ZoneName"] for z in zones)
    if len(names) < 2:
        raise UsageError(
            f"{sc.aws.region} has fewer than two availability zones.", "Use another region."
        )
    return names[:2]


def read_subnets(sc: StepContext, vpc_id: str) -> list[Any]:
    with aws_action("find the stack's subnets"):
        return list(
            sc.aws.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        )


def read_gateways(sc: StepContext, vpc_id: str) -> list[Any]:
    with aws_action("find the internet gateway"):
        return list(
            sc.aws.ec2.describe_internet_gateways(
                Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
            )["InternetGateways"]
        )


def read_route_tables(sc: StepContext, vpc_id: str) -> list[Any]:
    with aws_action("find the public route table"):
        return list(
            sc.aws.ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
                "RouteTables"
            ]
        )


def _ensure_subnets(sc: StepContext, vpc_id: str, vpc_cidr: str) -> dict[str, str]:
    ec2 = sc.aws.ec2
    by_role = _subnets_by_role(sc.take("subnets", lambda: read_subnets(sc, vpc_id)), vpc_cidr)
    for role, subnet in by_role.items():
        planned = compare_subnet(sc, str(role), subnet) if role in SUBNET_ROLES else None
        if planned is not None and planned.changed:
            sc.report(f"subnet {role}", UPDATING, planned.summary())
            with aws_action(f"tag the {role} subnet"):
                sync_ec2_tags(sc, subnet["SubnetId"], planned)
            sc.report(f"subnet {role}", UPDATED, subnet["SubnetId"])
    ids = {role: str(s["SubnetId"]) for role, s in by_role.items() if role in SUBNET_ROLES}
    missing = [r for r in SUBNET_ROLES if r not in ids]
    if not missing:
        return ids
    zones = _zones(sc)
    cidrs = subnet_cidrs(vpc_cidr)

    def create(role: str) -> str:
        zone = zones[0] if role.endswith("-a") else zones[1]
        sc.report(f"subnet {role}", CREATING, cidrs[role])
        with aws_action(f"create the {role} subnet"):
            made = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidrs[role],
                AvailabilityZone=zone,
                TagSpecifications=_tag_spec("subnet", _subnet_tags(sc, role)),
            )["Subnet"]["SubnetId"]
        sc.report(f"subnet {role}", CREATED, made)
        return made

    made = in_parallel([partial(create, role) for role in missing])
    ids.update(zip(missing, made, strict=True))
    return ids


def _loose_gateways(sc: StepContext) -> list[Any]:
    """The stack's internet gateways attached to no VPC: an `up` or `down` cut short between
    creating (or detaching) one and attaching (or deleting) it leaves one."""
    got = sc.aws.ec2.describe_internet_gateways(
        Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [sc.names.stack]}]
    )["InternetGateways"]
    return [gw for gw in got if not gw.get("Attachments")]


def _ensure_gateway(sc: StepContext, vpc_id: str) -> str:
    ec2 = sc.aws.ec2
    attached = sc.take("gateways", lambda: read_gateways(sc, vpc_id))
    if attached:
        igw = str(attached[0]["InternetGatewayId"])
        planned = compare_gateway(sc, attached)
        if planned.changed:
            sc.report("internet gateway", UPDATING, f"{igw}: {planned.summary()}")
            with aws_action(f"tag the internet gateway {igw}"):
                sync_ec2_tags(sc, igw, planned)
            sc.report("internet gateway", UPDATED, igw)
        return igw
    with aws_action("find a detached internet gateway of the stack"):
        loose = _loose_gateways(sc)
    sc.report("internet gateway", CREATING)
    with aws_action("create the internet gateway"):
        if loose:
            igw = str(loose[0]["InternetGatewayId"])
        else:
            igw = ec2.create_internet_gateway(
                TagSpecifications=_tag_spec("internet-gateway", _gateway_tags(sc))
            )["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    sc.report("internet gateway", CREATED, igw)
    return igw


def _ensure_public_routes(sc: StepContext, vpc_id: str, igw: str, public: list[str]) -> None:
    ec2 = sc.aws.ec2
    tables = _public_tables(sc.take("route_tables", lambda: read_route_tables(sc, vpc_id)), public)
    planned = compare_table(sc, tables, igw, public)
    if not planned.changed:
        return
    with aws_action("set up the public route table"):
        if tables:
            rt = tables[0]["RouteTableId"]
            sc.report("route table", UPDATING, f"{rt}: {planned.summary()}")
            sync_ec2_tags(sc, rt, planned)
        else:
            sc.report("route table", CREATING, "public")
            rt = ec2.create_route_table(
                VpcId=vpc_id, TagSpecifications=_tag_spec("route-table", _table_tags(sc))
            )["RouteTable"]["RouteTableId"]
        route = planned.get(f"route {ANYWHERE}")
        if route is not None and route.old is not None:
            ec2.replace_route(RouteTableId=rt, DestinationCidrBlock=ANYWHERE, GatewayId=igw)
        elif route is not None:
            ec2.create_route(RouteTableId=rt, DestinationCidrBlock=ANYWHERE, GatewayId=igw)
        for d in planned.diffs:
            if d.attribute == "associated subnet":
                ec2.associate_route_table(RouteTableId=rt, SubnetId=d.new)
    sc.report("route table", UPDATED if tables else CREATED, rt)


def describe(sc: StepContext) -> list[Resource]:
    vpc = sc.take("network", lambda: find_vpc(sc))
    if vpc is None:
        return [Resource("vpc", sc.cfg.network.vpc_id or sc.names.vpc)]
    sc.out.vpc_id = vpc["VpcId"]
    sc.out.vpc_owned = not sc.cfg.network.vpc_id
    detail = vpc["CidrBlock"] + ("" if sc.out.vpc_owned else " (yours, referenced)")
    return [Resource("vpc", sc.names.vpc, vpc["VpcId"], vpc.get("State", "available"), detail)]


DEPENDENCY = {"DependencyViolation", "InvalidParameterValue"}


def delete_contents(sc: StepContext) -> None:
    """Internet gateway, subnets and route tables of the stack's VPC (sc.out.vpc_id, found by
    describe); runs beside the deletion of the security groups, before `delete`."""
    vpc_id = sc.out.vpc_id
    if sc.cfg.network.vpc_id or not vpc_id:
        return
    ec2 = sc.aws.ec2
    with aws_action(f"delete the contents of the VPC {vpc_id}"):
        tables, attached, loose, subnets = in_parallel(
            [
                lambda: read_route_tables(sc, vpc_id),
                lambda: read_gateways(sc, vpc_id),
                lambda: _loose_gateways(sc),
                lambda: read_subnets(sc, vpc_id),
            ]
        )
        gateways = {gw["InternetGatewayId"]: False for gw in loose}
        gateways |= {gw["InternetGatewayId"]: True for gw in attached}

        def drop_gateway(gid: str, is_attached: bool) -> None:
            if is_attached:
                detach = lambda: ec2.detach_internet_gateway(InternetGatewayId=gid, VpcId=vpc_id)  # noqa: E731
                retry_on(sc, DEPENDENCY, detach)
            ec2.delete_internet_gateway(InternetGatewayId=gid)

        custom = [t for t in tables if not any(a.get("Main") for a in t.get("Associations", []))]
        in_parallel(
            [partial(drop_gateway, gid, is_attached) for gid, is_attached in gateways.items()]
            + [
                partial(
                    ec2.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"]
                )
                for table in custom
                for assoc in table.get("Associations", [])
            ],
            workers=6,
        )
        # ENIs of the load balancer, tasks and database linger a while after their deletion.
        in_parallel(
            [
                lambda s=sub["SubnetId"]: retry_on(
                    sc, DEPENDENCY, lambda: ec2.delete_subnet(SubnetId=s), attempts=20
                )
                for sub in subnets
            ]
            + [
                lambda t=table["RouteTableId"]: ec2.delete_route_table(RouteTableId=t)
                for table in custom
            ],
            workers=6,
        )


def delete(sc: StepContext) -> None:
    """The VPC itself, once delete_contents and the security groups are done."""
    if sc.cfg.network.vpc_id:
        sc.report("vpc", KEPT, f"{sc.cfg.network.vpc_id} is yours: never deleted")
        return
    vpc_id = sc.out.vpc_id
    if not vpc_id:
        sc.report("vpc", DELETED, "already gone")
        return
    sc.report("vpc", DELETING, vpc_id)
    with aws_action(f"delete the VPC {vpc_id}"):
        retry_on(sc, DEPENDENCY, lambda: sc.aws.ec2.delete_vpc(VpcId=vpc_id), attempts=20)
    sc.report("vpc", DELETED, vpc_id)
