"""Params files: the values an operator gives the master stack, checked against its Parameters before deploy.

A params file is a YAML (or JSON) mapping from master parameter names to values. Checks mirror what
CloudFormation does at CreateStack time, so a mistake is caught on the operator's machine with the file and
key named, instead of minutes into a deploy.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from moodle_cfn.checks import Check, run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.rules import check_rules, effective_values

Scalar = str | int | float | bool
# Turns the value of a structured params-file key into parameter values; raises InputError.
Expander = Callable[[Any, str], dict[str, Any]]
LIST_TYPES = ("CommaDelimitedList", "List<")
# A params-file key that is not a template parameter: what the file is for. `production` refuses the
# examples' placeholders and an empty alarm address (README: "Your params file").
ENVIRONMENT_KEY = "Environment"
ENVIRONMENTS = ("production", "staging", "development")
# The monitoring layer's parameter (named here as a string: params.py is imported by every layer).
ALARM_EMAIL_KEY = "AlarmEmail"
# Names reserved for documentation (RFC 2606, RFC 6761) and the shipped examples' own placeholders.
RESERVED_DOMAINS = ("example", "invalid", "test", "localhost", "example.com", "example.net", "example.org")
PLACEHOLDER_PREFIXES = ("example-",)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain PyYAML silently keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _reject_duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate key {duplicates[0]!r}")
    return dict(pairs)


def read_document(path: Path) -> Mapping[str, Any]:
    """Parse a params file into a mapping; every failure is an InputError naming the file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, "file not found") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory, not a params file") from None
    except UnicodeDecodeError as error:
        raise InputError(source, f"not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise InputError(source, f"cannot read: {error.strerror}") from None

    try:
        if path.suffix.lower() == ".json":
            document = json.loads(text, object_pairs_hook=_reject_duplicate_json_keys)
        else:
            document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except json.JSONDecodeError as error:
        raise InputError(
            source, f"line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from None
    except ValueError as error:
        raise InputError(source, f"invalid JSON: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InputError(source, f"{where}invalid YAML: {problem}") from None

    if document is None:
        raise InputError(source, "is empty; expected a mapping of master parameter names to values")
    if not isinstance(document, dict):
        raise InputError(
            source,
            f"expected a mapping of master parameter names to values, found a {type(document).__name__}",
        )
    for key in document:
        if not isinstance(key, str):
            raise InputError(source, f"parameter names must be strings, found {key!r}")
    return document


def _as_text(value: Scalar) -> str:
    """The string CloudFormation would receive for a YAML scalar (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _check_list(source: str, key: str, value: Any, spec: Mapping[str, Any]) -> str:
    if isinstance(value, list):
        if not all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in value):
            raise InputError(source, "list items must be plain strings or numbers", key)
        items = [str(item) for item in value]
    elif isinstance(value, str):
        items = [item.strip() for item in value.split(",")] if value else []
    else:
        raise InputError(source, f"expected a list or a comma-separated string for type {spec['Type']}", key)
    if spec["Type"] == "List<Number>" and any(_number(item) is None for item in items):
        raise InputError(source, "every item must be a number for type List<Number>", key)
    return ",".join(items)


def _allowed(source: str, key: str, text: str, spec: Mapping[str, Any]) -> None:
    allowed = spec.get("AllowedValues")
    if allowed is None:
        return
    if spec["Type"] == "Number":
        ok = any(_number(text) == _number(str(option)) for option in allowed)
    else:
        ok = text in [_as_text(option) for option in allowed]
    if not ok:
        shown = ", ".join(_as_text(option) for option in allowed)
        raise InputError(source, f"{text!r} is not one of the allowed values: {shown}", key)


def check_value(source: str, key: str, value: Any, spec: Mapping[str, Any]) -> str:
    """Check one value against one CloudFormation parameter definition; return it as CloudFormation text."""
    kind = spec["Type"]
    if value is None:
        raise InputError(source, "has no value (write '' for an empty string)", key)
    if kind.startswith(LIST_TYPES):
        return _check_list(source, key, value, spec)
    if not isinstance(value, Scalar):
        raise InputError(
            source, f"expected a single value for type {kind}, found a {type(value).__name__}", key
        )

    text = _as_text(value)
    constraint = spec.get("ConstraintDescription")
    if kind == "Number":
        number = _number(text) if not isinstance(value, bool) else None
        if number is None:
            raise InputError(source, f"{text!r} is not a number", key)
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise InputError(source, f"{text} is below the minimum {spec['MinValue']}", key)
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise InputError(source, f"{text} is above the maximum {spec['MaxValue']}", key)
    else:
        if "MinLength" in spec and len(text) < int(spec["MinLength"]):
            raise InputError(source, f"is shorter than {spec['MinLength']} characters", key)
        if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
            raise InputError(source, f"is longer than {spec['MaxLength']} characters", key)
        pattern = spec.get("AllowedPattern")
        # CloudFormation requires the whole value to match the pattern.
        if pattern is not None and not re.fullmatch(pattern, text):
            reason = constraint or f"must match the pattern {pattern}"
            raise InputError(source, f"{text!r} is not valid: {reason}", key)
    _allowed(source, key, text, spec)
    return text


def expand(document: Mapping[str, Any], expanders: Mapping[str, Expander], source: str) -> dict[str, Any]:
    """The document with each structured key replaced by the parameters it stands for."""
    expanded: dict[str, Any] = {}
    for key, value in document.items():
        if key not in expanders:
            expanded[key] = value
            continue
        for name, parameter_value in expanders[key](value, source).items():
            if name in document and name != key:
                raise InputError(source, f"is also set by {key}; give it in one place only", name)
            expanded[name] = parameter_value
    return expanded


def validate(
    document: Mapping[str, Any], parameters: Mapping[str, Mapping[str, Any]], source: str
) -> dict[str, str]:
    """Check a params mapping against a template's Parameters; return {name: CloudFormation value}.

    Raises InputError on the first problem, in file order: unknown key, bad value, then missing required key.
    """
    values: dict[str, str] = {}
    for key, value in document.items():
        spec = parameters.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, list(parameters), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(
                source, f"unknown parameter (the master template has no such parameter){hint}", key
            )
        values[key] = check_value(source, key, value, spec)
    for key, spec in parameters.items():
        if key not in values and "Default" not in spec:
            raise InputError(
                source, "missing: the master template requires this parameter (it has no default)", key
            )
    return values


def environment_of(document: Mapping[str, Any], source: str) -> str | None:
    """The file's own `Environment:` key (not a template parameter), checked; None when absent."""
    if ENVIRONMENT_KEY not in document:
        return None
    value = document[ENVIRONMENT_KEY]
    if value not in ENVIRONMENTS:
        raise InputError(source, f"{value!r} is not one of {', '.join(ENVIRONMENTS)}", ENVIRONMENT_KEY)
    return str(value)


def read(
    path: Path,
    template: Mapping[str, Any],
    checks: Iterable[Check] = (),
    expanders: Mapping[str, Expander] | None = None,
    region: str | None = None,
) -> tuple[dict[str, str], str | None]:
    """Read a params file; check it against a template's Parameters, its Rules (those reading AWS::Region
    too when `region` is known), then the cross-checks. Its values and its Environment."""
    source = str(path)
    document = dict(read_document(path))
    environment = environment_of(document, source)
    document.pop(ENVIRONMENT_KEY, None)
    values = validate(expand(document, expanders or {}, source), template["Parameters"], source)
    check_rules(template, values, source, region)
    run_checks(checks, effective_values(template["Parameters"], values), source)
    return values, environment


def load(
    path: Path,
    template: Mapping[str, Any],
    checks: Iterable[Check] = (),
    expanders: Mapping[str, Expander] | None = None,
    region: str | None = None,
) -> dict[str, str]:
    """A params file's values, checked as `read` checks them."""
    return read(path, template, checks, expanders, region)[0]


def placeholder_reason(value: str) -> str | None:
    """Why `value` looks like an example left in place (a name reserved for documentation), or None."""
    if value.startswith(PLACEHOLDER_PREFIXES):
        return f"{value!r} is the example's placeholder; replace it with your own"
    domain = value.rsplit("@", 1)[-1].lower().rstrip(".")
    if any(domain == name or domain.endswith("." + name) for name in RESERVED_DOMAINS):
        return f"{value!r} uses a domain reserved for examples (RFC 2606); replace it with your own"
    return None


def check_ready_for_production(values: Mapping[str, str], environment: str | None, source: str) -> None:
    """In a file marked `Environment: production`: no placeholder left, and someone hears the alarms."""
    if environment != "production":
        return
    for key, value in values.items():
        reason = placeholder_reason(value)
        if reason:
            raise InputError(source, f"{reason} (Environment: production)", key)
    if not values.get(ALARM_EMAIL_KEY):
        raise InputError(
            source,
            "is empty: nobody would hear the alarms of a production site; give an operations address "
            "(Environment: production)",
            ALARM_EMAIL_KEY,
        )


def to_cli_json(values: Mapping[str, str]) -> str:
    """The `[{"ParameterKey": .., "ParameterValue": ..}]` list the AWS CLI and StackSets take, sorted by key."""
    entries = [{"ParameterKey": key, "ParameterValue": values[key]} for key in sorted(values)]
    return json.dumps(entries, indent=2) + "\n"
