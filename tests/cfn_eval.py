"""Which resources exist, wired how, for given parameter values: Conditions evaluated by moodle_cfn.rules,
Fn::If branches resolved here, so tests assert on what CloudFormation would create, not on template text."""

from __future__ import annotations

from typing import Any

from moodle_cfn.rules import condition_values

NO_VALUE = {"Ref": "AWS::NoValue"}


def evaluate_conditions(template: dict[str, Any], given: dict[str, str]) -> dict[str, bool]:
    """Every condition of `template` for parameter values `given` over the defaults (the project's own
    offline evaluator, with us-east-1 as the region unless given)."""
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    values["AWS::Region"] = "us-east-1"
    values.update(given)
    return condition_values(template, values)


def resolve_ifs(value: Any, conditions: dict[str, bool]) -> Any:
    """`value` with every Fn::If replaced by its chosen branch (AWS::NoValue removed from lists)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return resolve_ifs(when_true if conditions[name] else when_false, conditions)
        items = {key: resolve_ifs(item, conditions) for key, item in value.items()}
        return {key: item for key, item in items.items() if item != NO_VALUE}
    if isinstance(value, list):
        items = [resolve_ifs(item, conditions) for item in value]
        return [item for item in items if item != NO_VALUE]
    return value


def active_resources(template: dict[str, Any], given: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation would create for `given`, with Fn::If resolved."""
    conditions = evaluate_conditions(template, given)
    return {
        name: resolve_ifs(resource, conditions)
        for name, resource in template["Resources"].items()
        if "Condition" not in resource or conditions[resource["Condition"]]
    }


def of_type(resources: dict[str, dict[str, Any]], resource_type: str) -> dict[str, dict[str, Any]]:
    """The resources of one type."""
    return {name: r for name, r in resources.items() if r["Type"] == resource_type}
