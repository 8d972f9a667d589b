"""What cfn-init writes on a web node, rendered from the committed app template's launch-template Metadata.

No copy of any node file is kept by hand: the rehearsal reads templates/app.yaml, resolves the intrinsic
functions the way CloudFormation would for the given parameter values and resource ids, and writes each
file as cfn-init does (a string verbatim; an object as JSON, every value a string).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cfn_flip

from tests.cfn_eval import evaluate_conditions, resolve_ifs

ROOT = Path(__file__).resolve().parents[2]
APP_TEMPLATE = ROOT / "templates" / "app.yaml"
LAUNCH_TEMPLATE = "WebLaunchTemplate"


@dataclass(frozen=True)
class InitFile:
    """One file of AWS::CloudFormation::Init: where it goes, what it holds, its mode."""

    path: str
    content: str
    mode: int


def app_template() -> dict[str, Any]:
    """templates/app.yaml as data (long-form intrinsic functions)."""
    return json.loads(cfn_flip.to_json(APP_TEMPLATE.read_text()))


def database_parameters() -> dict[str, str]:
    """The Aurora cluster parameter group's settings in templates/data.yaml."""
    data = json.loads(cfn_flip.to_json((APP_TEMPLATE.parent / "data.yaml").read_text()))
    return data["Resources"]["DatabaseClusterParameterGroup"]["Properties"]["Parameters"]


def resolve(value: Any, names: dict[str, str]) -> Any:
    """`value` with Ref, Fn::GetAtt, Fn::Sub, Fn::Select and Fn::Split replaced from `names` (parameters, pseudo parameters,
    resource ids and 'Resource.Attribute' values). A name missing from `names` is an error: the rig
    must say what every value is."""
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return names[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        return names[".".join(value["Fn::GetAtt"])]
    if set(value) == {"Fn::Split"}:
        delimiter, text = value["Fn::Split"]
        return str(resolve(text, names)).split(delimiter)
    if set(value) == {"Fn::Select"}:
        index, items = value["Fn::Select"]
        return resolve(items, names)[int(index)]
    if set(value) == {"Fn::Sub"}:
        text, local = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        scope = {**names, **{key: resolve(item, names) for key, item in local.items()}}
        text = re.sub(r"\$\{(?!!)([A-Za-z0-9:._]+)\}", lambda m: str(scope[m.group(1)]), text)
        return text.replace("${!", "${")
    return {key: resolve(item, names) for key, item in value.items()}


def init_files(parameters: dict[str, str], names: dict[str, str]) -> list[InitFile]:
    """The files of the launch template's Init config for these parameter values; `names` gives the
    resources' and other layers' values."""
    template = app_template()
    conditions = evaluate_conditions(template, parameters)
    metadata = resolve_ifs(template["Resources"][LAUNCH_TEMPLATE]["Metadata"], conditions)
    scope = {
        **{k: str(v.get("Default", "")) for k, v in template["Parameters"].items()},
        **parameters,
        **names,
    }
    files = []
    for path, spec in metadata["AWS::CloudFormation::Init"]["config"]["files"].items():
        content = resolve(spec["content"], scope)
        if isinstance(content, dict):
            content = json.dumps({key: str(item) for key, item in content.items()})
        files.append(InitFile(path, content, int(spec["mode"], 8)))
    return files


def write(files: list[InitFile], root: Path) -> None:
    """Write the files under `root` (a node's view of /), as cfn-init would."""
    for item in files:
        target = root / item.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content, encoding="utf-8")
        os.chmod(target, item.mode)
