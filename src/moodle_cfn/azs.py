"""Availability-zone slots shared by every layer: the AZ-count parameter, its condition, per-slot lists.

Layers loop over `AZ_SLOTS`; slot 3 exists only under `HAS_AZ3`. Nothing is written out per AZ.
"""

from __future__ import annotations

from troposphere import AWSHelperFn, Equals, GetAZs, If, Join, Parameter, Ref, Select, Template

from moodle_cfn.common import GROUP_NETWORK, OperatorParameter

AZ_SLOTS = (1, 2, 3)
HAS_AZ3 = "HasAz3"

AVAILABILITY_ZONE_COUNT = OperatorParameter(
    Parameter(
        "AvailabilityZoneCount",
        Type="String",
        Default="2",
        AllowedValues=["2", "3"],
        Description="Number of Availability Zones to spread every tier over (the region's first 2 or 3 AZs).",
    ),
    label="Number of Availability Zones",
    group=GROUP_NETWORK,
)


def three_azs() -> Equals:
    """The condition expression "three AZs are in use"."""
    return Equals(Ref(AVAILABILITY_ZONE_COUNT.parameter), "3")


def add_az_condition(template: Template) -> None:
    """Declare the `HasAz3` condition."""
    template.add_condition(HAS_AZ3, three_azs())


def slot_condition(slot: int) -> str | None:
    """Condition under which AZ `slot` exists (None: always)."""
    return HAS_AZ3 if slot == 3 else None


def availability_zone(slot: int) -> Select:
    """The region's AZ for `slot`. GetAZs("") means the stack's own region (and works in StackSets)."""
    return Select(slot - 1, GetAZs(""))


def per_slot_list(values: dict[int, AWSHelperFn], extra: tuple[AWSHelperFn, ...] = ()) -> If:
    """The values of the AZ slots in use, in slot order, followed by `extra`.

    A whole list per branch, rather than AWS::NoValue inside one list, which some tools (moto) mishandle.
    """
    return If(
        HAS_AZ3,
        [*(values[slot] for slot in AZ_SLOTS), *extra],
        [*(values[slot] for slot in AZ_SLOTS if slot != 3), *extra],
    )


def per_slot_joined(values: dict[int, AWSHelperFn]) -> If:
    """A comma-joined list over the AZ slots in use, in slot order (for outputs)."""
    return If(
        HAS_AZ3,
        Join(",", [values[slot] for slot in AZ_SLOTS]),
        Join(",", [values[slot] for slot in AZ_SLOTS if slot != 3]),
    )
