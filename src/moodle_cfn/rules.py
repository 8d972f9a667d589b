"""Offline evaluation of a template's Rules against parameter values, so bad combinations fail before deploy.

Supports the rule functions that need no AWS API: Fn::And, Fn::Or, Fn::Not, Fn::Equals, Fn::Contains,
Fn::EachMemberEquals, Fn::EachMemberIn and Ref, and for Conditions Fn::Select and Fn::Split. An assertion using anything else (Fn::ValueOf, Fn::RefAll
and the like look up the account) is left to CloudFormation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moodle_cfn.errors import InputError


class NotOffline(Exception):
    """The expression needs something only CloudFormation can evaluate."""


def _resolve(expression: Any, values: Mapping[str, str]) -> Any:
    if isinstance(expression, str | int | float | bool):
        return str(expression) if not isinstance(expression, bool) else str(expression).lower()
    if isinstance(expression, list):
        return [_resolve(item, values) for item in expression]
    if isinstance(expression, dict) and len(expression) == 1:
        ((function, argument),) = expression.items()
        if function == "Ref":
            if argument not in values:
                raise NotOffline(argument)
            return values[argument]
        evaluator = _FUNCTIONS.get(function)
        if evaluator is not None:
            return evaluator(argument, values)
    raise NotOffline(repr(expression))


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [item.strip() for item in str(value).split(",")]


_FUNCTIONS = {
    "Fn::And": lambda args, v: all(_resolve(a, v) for a in args),
    "Fn::Or": lambda args, v: any(_resolve(a, v) for a in args),
    "Fn::Not": lambda args, v: not _resolve(args[0], v),
    "Fn::Equals": lambda args, v: _resolve(args[0], v) == _resolve(args[1], v),
    "Fn::Contains": lambda args, v: _resolve(args[1], v) in _as_list(_resolve(args[0], v)),
    "Fn::EachMemberEquals": lambda args, v: all(
        m == _resolve(args[1], v) for m in _as_list(_resolve(args[0], v))
    ),
    "Fn::EachMemberIn": lambda args, v: (
        set(_as_list(_resolve(args[0], v))) <= set(_as_list(_resolve(args[1], v)))
    ),
    # Conditions may take a part of a value (the scheme of a URI, say).
    "Fn::Split": lambda args, v: _resolve(args[1], v).split(args[0]),
    "Fn::Select": lambda args, v: _resolve(args[1], v)[int(args[0])],
}


def effective_values(parameters: Mapping[str, Mapping[str, Any]], given: Mapping[str, str]) -> dict[str, str]:
    """Given values over the template defaults, as CloudFormation would see them."""
    values = {name: str(spec["Default"]) for name, spec in parameters.items() if "Default" in spec}
    values.update(given)
    return values


def check_rules(
    template: Mapping[str, Any], given: Mapping[str, str], source: str, region: str | None = None
) -> None:
    """Raise InputError for the first failed assertion, keyed by the rule name. With `region` known, the
    rules that read AWS::Region are evaluated too; without it they are left to CloudFormation."""
    values = effective_values(template.get("Parameters", {}), given)
    if region:
        values["AWS::Region"] = region
    for rule_name, rule in sorted(template.get("Rules", {}).items()):
        try:
            if "RuleCondition" in rule and not _resolve(rule["RuleCondition"], values):
                continue
        except NotOffline:
            continue
        for assertion in rule.get("Assertions", []):
            try:
                holds = _resolve(assertion["Assert"], values)
            except NotOffline:
                continue
            if not holds:
                raise InputError(
                    source, assertion.get("AssertDescription", "assertion failed"), f"rule {rule_name}"
                )


def _inline_conditions(expression: Any, conditions: Mapping[str, Any]) -> Any:
    """`expression` with every {"Condition": name} replaced by that condition's own expression."""
    if isinstance(expression, dict):
        if set(expression) == {"Condition"}:
            return _inline_conditions(conditions[expression["Condition"]], conditions)
        return {key: _inline_conditions(value, conditions) for key, value in expression.items()}
    if isinstance(expression, list):
        return [_inline_conditions(item, conditions) for item in expression]
    return expression


def condition_values(template: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, bool]:
    """Every Condition of a template for parameter `values` (pseudo parameters such as AWS::Region included)."""
    conditions = template.get("Conditions", {})
    return {name: bool(_resolve(_inline_conditions(c, conditions), values)) for name, c in conditions.items()}


def active_resources(template: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The resources CloudFormation would create for `values` (those whose Condition holds, or has none)."""
    holds = condition_values(template, values)
    return {name: r for name, r in template["Resources"].items() if holds.get(r.get("Condition", ""), True)}
