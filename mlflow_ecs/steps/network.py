"""VPC with 2 public + 2 private subnets in 2 AZs, internet gateway, public routes.

Or the user's own VPC and subnets: referenced, validated, never modified or deleted.
"""

from __future__ import annotations

import ipaddress
from functools import partial
from typing import Any

from ..aws import tag_dict, tag_list
from ..config import OWNER_TAG
from ..errors import UsageError
from .base import (
    CREATING,
    DELETED,
    DELETING,
    KEPT,
    READY,
    UNCHANGED,
    Resource,
    StepContext,
    aws_action,
    in_parallel,
    retry_on,
)

ROLE_TAG = "mlflow-ecs:role"
SUBNET_ROLES = ("public-a", "public-b", "private-a", "private-b")
ANYWHERE = "0.0.0.0/0"


def subnet_cidrs(vpc_cidr: str) -> dict[str, str]:
    """Split the VPC block in four equal subnets, one per role."""
    net = ipaddress.IPv4Network(vpc_cidr)
    blocks = list(net.subnets(prefixlen_diff=2))
    return {role: str(block) for role, block in zip(SUBNET_ROLES, blocks, strict=True)}


def _tag_spec(kind: str, name: str, sc: StepContext, role: str = "") -> list[Any]:
    tags = {**sc.tags, "Name": name}
    if role:
        tags[ROLE_TAG] = role
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


def ensure(sc: StepContext) -> None:
    if sc.cfg.network.vpc_id:
        _reference(sc)
        return
    vpc = sc.take("network", lambda: find_vpc(sc))
    ec2 = sc.aws.ec2
    if vpc is None:
        sc.report("vpc", CREATING, sc.cfg.network.cidr)
        with aws_action(f"create the VPC {sc.names.vpc}"):
            vpc_id = ec2.create_vpc(
                CidrBlock=sc.cfg.network.cidr,
                TagSpecifications=_tag_spec("vpc", sc.names.vpc, sc),
            )["Vpc"]["VpcId"]
            ec2.get_waiter("vpc_available").wait(
                VpcIds=[vpc_id],
                WaiterConfig={"Delay": max(round(sc.poll.interval), 1), "MaxAttempts": 40},
            )
        cidr = sc.cfg.network.cidr
    else:
        vpc_id, cidr = vpc["VpcId"], vpc["CidrBlock"]
    sc.out.vpc_id, sc.out.vpc_owned = vpc_id, True
    subnets = _ensure_subnets(sc, vpc_id, cidr)
    sc.out.public_subnets = [subnets["public-a"], subnets["public-b"]]
    sc.out.private_subnets = [subnets["private-a"], subnets["private-b"]]
    sc.report("vpc", READY if vpc is None else UNCHANGED, vpc_id)


def ensure_internet(sc: StepContext) -> None:
    """Internet gateway and the public subnets' default route. Not needed by the database, so
    the engine runs it while the database is being created (the load balancer needs it)."""
    if sc.cfg.network.vpc_id:
        return
    igw = _ensure_gateway(sc, sc.out.vpc_id)
    _ensure_public_routes(sc, sc.out.vpc_id, igw, sc.out.public_subnets)


def _reference(sc: StepContext) -> None:
    """Check the user's VPC and subnets exist and fit; change nothing."""
    n = sc.cfg.network
    if sc.take("network", lambda: find_vpc(sc)) is None:
        raise UsageError(
            f"network -> vpc_id: the VPC {n.vpc_id} does not exist in {sc.aws.region}.",
            "Give a VPC id of this account and region, or leave vpc_id empty to create one.",
        )
    ids = [*n.public_subnet_ids, *n.private_subnet_ids]
    with aws_action("find the given subnets"):
        found = sc.aws.ec2.describe_subnets(Filters=[{"Name": "subnet-id", "Values": ids}])
    subnets = {s["SubnetId"]: s for s in found.get("Subnets", [])}
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
    sc.report("vpc", KEPT, f"{n.vpc_id} (yours: referenced, never modified)")


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


def read_public_tables(sc: StepContext, vpc_id: str) -> list[Any]:
    with aws_action("find the public route table"):
        return list(
            sc.aws.ec2.describe_route_tables(
                Filters=[
                    {"Name": "vpc-id", "Values": [vpc_id]},
                    {"Name": f"tag:{ROLE_TAG}", "Values": ["public"]},
                ]
            )["RouteTables"]
        )


def _ensure_subnets(sc: StepContext, vpc_id: str, vpc_cidr: str) -> dict[str, str]:
    ec2 = sc.aws.ec2
    found = sc.take("subnets", lambda: read_subnets(sc, vpc_id))
    by_role = {tag_dict(s.get("Tags")).get(ROLE_TAG): s["SubnetId"] for s in found}
    missing = [r for r in SUBNET_ROLES if r not in by_role]
    if not missing:
        return {r: str(by_role[r]) for r in SUBNET_ROLES}
    zones = _zones(sc)
    cidrs = subnet_cidrs(vpc_cidr)

    def create(role: str) -> str:
        zone = zones[0] if role.endswith("-a") else zones[1]
        sc.report(f"subnet {role}", CREATING, cidrs[role])
        with aws_action(f"create the {role} subnet"):
            return ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidrs[role],
                AvailabilityZone=zone,
                TagSpecifications=_tag_spec("subnet", f"{sc.names.stack}-{role}", sc, role),
            )["Subnet"]["SubnetId"]

    made = in_parallel([partial(create, role) for role in missing])
    by_role.update(zip(missing, made, strict=True))
    return {r: str(by_role[r]) for r in SUBNET_ROLES}


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
        return str(attached[0]["InternetGatewayId"])
    with aws_action("find a detached internet gateway of the stack"):
        loose = _loose_gateways(sc)
    sc.report("internet gateway", CREATING)
    with aws_action("create the internet gateway"):
        if loose:
            igw = str(loose[0]["InternetGatewayId"])
        else:
            igw = ec2.create_internet_gateway(
                TagSpecifications=_tag_spec("internet-gateway", sc.names.stack, sc)
            )["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc_id)
    return igw


def _ensure_public_routes(sc: StepContext, vpc_id: str, igw: str, public: list[str]) -> None:
    ec2 = sc.aws.ec2
    tables = sc.take("route_tables", lambda: read_public_tables(sc, vpc_id))
    with aws_action("set up the public route table"):
        if tables:
            table = tables[0]
            rt = table["RouteTableId"]
        else:
            sc.report("route table", CREATING, "public")
            rt = ec2.create_route_table(
                VpcId=vpc_id,
                TagSpecifications=_tag_spec(
                    "route-table", f"{sc.names.stack}-public", sc, "public"
                ),
            )["RouteTable"]["RouteTableId"]
            table = {"Routes": [], "Associations": []}
        routes = {
            r.get("DestinationCidrBlock"): r.get("GatewayId") for r in table.get("Routes", [])
        }
        if routes.get(ANYWHERE) != igw:
            if ANYWHERE in routes:
                ec2.replace_route(RouteTableId=rt, DestinationCidrBlock=ANYWHERE, GatewayId=igw)
            else:
                ec2.create_route(RouteTableId=rt, DestinationCidrBlock=ANYWHERE, GatewayId=igw)
        associated = {a.get("SubnetId") for a in table.get("Associations", [])}
        for subnet in public:
            if subnet not in associated:
                ec2.associate_route_table(RouteTableId=rt, SubnetId=subnet)


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
    only_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    with aws_action(f"delete the contents of the VPC {vpc_id}"):
        tables, attached, loose, subnets = in_parallel(
            [
                lambda: ec2.describe_route_tables(Filters=only_vpc)["RouteTables"],  # type: ignore[arg-type]
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
