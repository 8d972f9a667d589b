"""A tiny evaluator of template Conditions and Fn::If, so tests can ask "which resources exist, wired how,
for these parameter values" instead of only reading the template's text."""

from __future__ import annotations

from typing import Any

NO_VALUE = {"Ref": "AWS::NoValue"}


def _truth(
    expression: Any, parameters: dict[str, str], conditions: dict[str, Any], cache: dict[str, bool]
) -> Any:
    if isinstance(expression, dict) and len(expression) == 1:
        ((function, argument),) = expression.items()
        if function == "Ref":
            return parameters[argument]
        if function == "Condition":
            return condition_value(argument, parameters, conditions, cache)
        if function == "Fn::Equals":
            left, right = (_truth(item, parameters, conditions, cache) for item in argument)
            return str(left) == str(right)
        if function == "Fn::And":
            return all(_truth(item, parameters, conditions, cache) for item in argument)
        if function == "Fn::Or":
            return any(_truth(item, parameters, conditions, cache) for item in argument)
        if function == "Fn::Not":
            return not _truth(argument[0], parameters, conditions, cache)
        raise NotImplementedError(function)
    return expression


def condition_value(
    name: str, parameters: dict[str, str], conditions: dict[str, Any], cache: dict[str, bool]
) -> bool:
    """The value of one named condition."""
    if name not in cache:
        cache[name] = bool(_truth(conditions[name], parameters, conditions, cache))
    return cache[name]


def evaluate_conditions(template: dict[str, Any], given: dict[str, str]) -> dict[str, bool]:
    """Every condition of `template` for parameter values `given` over the defaults."""
    parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    parameters["AWS::Region"] = "us-east-1"  # a pseudo parameter; tests may give another region
    parameters.update(given)
    conditions = template.get("Conditions", {})
    cache: dict[str, bool] = {}
    return {name: condition_value(name, parameters, conditions, cache) for name in conditions}


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
