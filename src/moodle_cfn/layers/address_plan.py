"""The network's address plan: the VPC's CIDR block, the three subnet tiers with one CIDR per AZ slot, and
the check that every subnet in use lies inside the VPC without overlapping another.

The network layer (network.py) builds subnets from these tiers; every later layer names a tier (`APP`,
`DATA`, `PUBLIC`) to receive its subnet ids.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from troposphere import Parameter

from moodle_cfn.azs import AVAILABILITY_ZONE_COUNT, AZ_SLOTS
from moodle_cfn.common import GROUP_NETWORK, OperatorParameter

CIDR_PATTERN = (
    r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(1[6-9]|2[0-8])$"
)
CIDR_CONSTRAINT = "An IPv4 CIDR block with a prefix length from /16 to /28, such as 10.0.0.0/16."
# Every IPv4 address: the destination of a default route and of an Internet egress rule.
ANYWHERE = "0.0.0.0/0"


def _cidr_parameter(name: str, default: str, what: str) -> Parameter:
    return Parameter(
        name,
        Type="String",
        Default=default,
        AllowedPattern=CIDR_PATTERN,
        ConstraintDescription=CIDR_CONSTRAINT,
        Description=f"CIDR block of {what}.",
    )


VPC_CIDR = OperatorParameter(
    _cidr_parameter("VpcCidr", "10.0.0.0/16", "the VPC"), label="VPC CIDR block", group=GROUP_NETWORK
)


@dataclass(frozen=True)
class SubnetTier:
    """One row of subnets, one subnet per AZ slot."""

    key: str
    description: str
    default_cidrs: tuple[str, str, str]

    def subnet_title(self, slot: int) -> str:
        """Logical id of the subnet in `slot`."""
        return f"{self.key}Subnet{slot}"

    def cidr_parameter(self, slot: int) -> OperatorParameter:
        """The operator parameter holding this tier's CIDR in `slot` (the same object on every call)."""
        return _subnet_cidr_parameter(self, slot)

    @property
    def ids_output(self) -> str:
        """Name of the output listing this tier's subnet ids, comma separated, in AZ order."""
        return f"{self.key}SubnetIds"


@functools.cache
def _subnet_cidr_parameter(tier: SubnetTier, slot: int) -> OperatorParameter:
    return OperatorParameter(
        _cidr_parameter(
            f"{tier.key}Subnet{slot}Cidr",
            tier.default_cidrs[slot - 1],
            f"the {tier.description} subnet in AZ {slot}" + (" (used only with 3 AZs)" if slot == 3 else ""),
        ),
        label=f"{tier.description.capitalize()} subnet {slot} CIDR",
        group=GROUP_NETWORK,
    )


PUBLIC = SubnetTier("Public", "public", ("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"))
APP = SubnetTier("App", "private application", ("10.0.16.0/20", "10.0.32.0/20", "10.0.48.0/20"))
DATA = SubnetTier("Data", "private data", ("10.0.64.0/24", "10.0.65.0/24", "10.0.66.0/24"))
TIERS = (PUBLIC, APP, DATA)


def active_subnet_cidrs(values: Mapping[str, str]) -> dict[str, str]:
    """{parameter name: CIDR} of the subnets the AZ count puts to use."""
    slots = [slot for slot in AZ_SLOTS if slot != 3 or values[AVAILABILITY_ZONE_COUNT.name] == "3"]
    return {tier.cidr_parameter(s).name: values[tier.cidr_parameter(s).name] for tier in TIERS for s in slots}


def subnet_cidr_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """(parameter, reason) for the first subnet in use outside the VPC or overlapping another, else None.

    CloudFormation would only find out when creating the second subnet; this finds it before deploying.
    """
    blocks = {VPC_CIDR.name: values[VPC_CIDR.name], **active_subnet_cidrs(values)}
    for name, cidr in blocks.items():
        network = ipaddress.ip_network(cidr, strict=False)
        if str(network) != cidr:
            return name, f"{cidr} has host bits set; the block is {network}"
    vpc = ipaddress.ip_network(values[VPC_CIDR.name])
    networks = [(n, ipaddress.ip_network(c)) for n, c in active_subnet_cidrs(values).items()]
    for index, (name, network) in enumerate(networks):
        if not network.subnet_of(vpc):
            return name, f"{network} is not inside VpcCidr {vpc}"
        for other, other_network in networks[index + 1 :]:
            if network.overlaps(other_network):
                return other, f"{other_network} overlaps {name} ({network})"
    return None
