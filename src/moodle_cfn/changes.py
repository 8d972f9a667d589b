"""A change set as an operator reads it: every resource change across the nested stacks, why it happens,
and which ones would replace or remove the data the site keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATEFUL_TYPES = frozenset(
    {
        "AWS::RDS::DBCluster",
        "AWS::RDS::DBInstance",
        "AWS::EFS::FileSystem",
        "AWS::SecretsManager::Secret",
        "AWS::Backup::BackupVault",
        "AWS::S3::Bucket",
    }
)
ROOT_LABEL = "(site)"
NESTED_STACK_TYPE = "AWS::CloudFormation::Stack"


@dataclass(frozen=True)
class Change:
    """One resource change of a change set, flattened across nested stacks."""

    stack: str
    action: str
    logical_id: str
    resource_type: str
    replacement: str
    why: str

    @property
    def kind(self) -> str:
        """add, modify, replace or remove, as an operator reads it."""
        if self.action == "Modify" and self.replacement in ("True", "Conditional"):
            return "replace" if self.replacement == "True" else "may replace"
        return {"Add": "add", "Remove": "remove", "Modify": "modify"}.get(self.action, self.action.lower())

    def endangers_data(self) -> bool:
        """Whether it would replace or remove a resource that holds the site's data or secrets."""
        return self.resource_type in STATEFUL_TYPES and self.kind in ("replace", "may replace", "remove")


def why(details: Iterable[Mapping[str, Any]]) -> str:
    """What causes a change: the properties that change and the parameter or resource behind each."""
    causes = []
    for detail in details:
        target = detail.get("Target", {})
        what = target.get("Name") or target.get("Attribute", "")
        cause = detail.get("CausingEntity")
        text = f"{what} <- {cause}" if cause else what
        if text and text not in causes:
            causes.append(text)
    return ", ".join(causes)


def changes_of(
    describe: Callable[[str], Mapping[str, Any]], change_set_id: str, label: str = ROOT_LABEL
) -> list[Change]:
    """Every resource change of a change set and of the nested change sets it points to."""
    found: list[Change] = []
    answer = describe(change_set_id)
    for item in answer.get("Changes", []):
        change = item.get("ResourceChange", {})
        if change.get("ResourceType") == NESTED_STACK_TYPE and change.get("ChangeSetId"):
            found.extend(changes_of(describe, change["ChangeSetId"], change["LogicalResourceId"]))
            continue
        found.append(
            Change(
                stack=label,
                action=change.get("Action", ""),
                logical_id=change.get("LogicalResourceId", ""),
                resource_type=change.get("ResourceType", ""),
                replacement=change.get("Replacement", ""),
                why=why(change.get("Details", [])),
            )
        )
    return found


def preview_table(changes: list[Change]) -> str:
    """The changes as an aligned table, stack by stack; stateful replacements and removals marked."""
    if not changes:
        return "no changes\n"
    header = ("STACK", "CHANGE", "RESOURCE", "TYPE", "WHY")
    rows = [
        (c.stack, c.kind + (" !" if c.endangers_data() else ""), c.logical_id, c.resource_type, c.why or "-")
        for c in sorted(changes, key=lambda c: (c.stack != ROOT_LABEL, c.stack, c.logical_id))
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in (header, *rows)
    ]
    counts = {
        kind: sum(1 for c in changes if c.kind == kind)
        for kind in ("add", "modify", "replace", "may replace", "remove")
    }
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    return "\n".join(lines) + f"\n{summary}\n"


def stateful_resources(templates: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{logical id: type} of every resource the guard protects, across the layers' templates."""
    return {
        name: resource["Type"]
        for template in templates
        for name, resource in template.get("Resources", {}).items()
        if resource["Type"] in STATEFUL_TYPES
    }


def refused(changes: list[Change], allowed: set[str]) -> list[Change]:
    """The stateful replacements and removals that no --allow names."""
    return [c for c in changes if c.endangers_data() and c.logical_id not in allowed]


def removed_layers(changes: list[Change]) -> list[Change]:
    """The site's nested stacks a change removes. Only the network stack and the existing-VPC security stack
    can go, when ExistingVpcId changes between empty and an id after the first deploy: the database, caches
    and file system would then have to move to another network, which no update does in place."""
    return [
        c
        for c in changes
        if c.stack == ROOT_LABEL and c.resource_type == NESTED_STACK_TYPE and c.kind == "remove"
    ]
