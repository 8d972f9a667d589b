"""NAT gateways: one per AZ (production) or one shared by all AZs, chosen by `NatGatewayMode`.

Slot 1's gateway always exists (it serves every AZ in single mode); the others exist only per AZ, and the
third only with three AZs. The private application subnets route through them (vpc.py); the monitoring
layer alarms on the ones that exist.
"""

from __future__ import annotations

from troposphere import And as AndCondition
from troposphere import AWSHelperFn, Equals, GetAtt, If, Parameter, Ref, Template
from troposphere.ec2 import EIP, NatGateway, Subnet, VPCGatewayAttachment

from moodle_cfn.azs import AZ_SLOTS, per_slot_joined, three_azs
from moodle_cfn.common import GROUP_NETWORK, OperatorParameter, tags

NAT_PER_AZ = "NatPerAz"
NAT_IN_AZ3 = "NatInAz3"

NAT_GATEWAY_MODE = OperatorParameter(
    Parameter(
        "NatGatewayMode",
        Type="String",
        Default="per-az",
        AllowedValues=["per-az", "single"],
        Description="per-az: one NAT gateway in each AZ, so losing an AZ never cuts the others off (production). "
        "single: one NAT gateway shared by all AZs, cheaper, for non-production.",
    ),
    label="NAT gateways",
    group=GROUP_NETWORK,
)


def nat_condition(slot: int) -> str | None:
    """Condition under which a NAT gateway exists in AZ `slot` (None: always; slot 1 serves single mode)."""
    return {1: None, 2: NAT_PER_AZ, 3: NAT_IN_AZ3}[slot]


def add_nat_conditions(template: Template) -> None:
    """Which NAT gateways exist: per AZ or one, and the third only with three AZs."""
    nat_per_az = Equals(Ref(NAT_GATEWAY_MODE.parameter), "per-az")
    template.add_condition(NAT_PER_AZ, nat_per_az)
    # Spelled out rather than And(Condition(...), ...): same meaning, and moto evaluates it correctly.
    template.add_condition(NAT_IN_AZ3, AndCondition(three_azs(), nat_per_az))


def add_nat_gateways(
    template: Template, attachment: VPCGatewayAttachment, public: dict[int, Subnet]
) -> dict[int, NatGateway]:
    """A NAT gateway with its Elastic IP in each slot's public subnet (only slot 1 in single mode)."""
    gateways: dict[int, NatGateway] = {}
    for slot in AZ_SLOTS:
        eip = EIP(f"NatEip{slot}", DependsOn=attachment.title, Domain="vpc", Tags=tags(f"nat-{slot}"))
        gateway = NatGateway(
            f"NatGateway{slot}",
            AllocationId=GetAtt(eip, "AllocationId"),
            SubnetId=Ref(public[slot]),
            Tags=tags(f"nat-{slot}"),
        )
        condition = nat_condition(slot)
        if condition:
            eip.Condition = gateway.Condition = condition
        template.add_resource(eip)
        gateways[slot] = template.add_resource(gateway)
    return gateways


def nat_for_slot(slot: int, gateways: dict[int, NatGateway]) -> AWSHelperFn:
    """The NAT gateway the app subnet in `slot` routes through: its own AZ's, or slot 1's in single mode."""
    if nat_condition(slot) is None:
        return Ref(gateways[slot])
    return If(NAT_PER_AZ, Ref(gateways[slot]), Ref(gateways[1]))


def nat_gateway_ids(gateways: dict[int, NatGateway]) -> If:
    """The ids of the NAT gateways in use, comma separated, in AZ order (slot 1's alone in single mode)."""
    return If(NAT_PER_AZ, per_slot_joined({slot: Ref(g) for slot, g in gateways.items()}), Ref(gateways[1]))
