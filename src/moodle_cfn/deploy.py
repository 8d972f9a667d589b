"""`moodle-cfn deploy` and `status`: a site stack created or updated through a change set that includes the
nested stacks, previewed and guarded before anything runs, then watched until it ends.

The preview lists, per stack, what is added, modified, replaced or removed and why (the property and the
parameter behind it). A change that would replace or remove a stateful resource (the Aurora cluster and its
instances, the file system, the secrets, the backup vault, the log bucket) is refused unless that resource
is allowed by name. While the stack runs, one line per stack shows how many of its resources are done and
which one is being worked on; when it fails, the first failure across all stacks is the root cause, not the
cascade of cancellations after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from botocore.exceptions import ClientError, NoCredentialsError, ProfileNotFound, WaiterError

from moodle_cfn.changes import (  # noqa: F401 (re-exported: deploy.Change and friends)
    NESTED_STACK_TYPE,
    ROOT_LABEL,
    STATEFUL_TYPES,
    Change,
    changes_of,
    preview_table,
    refused,
    removed_layers,
    stateful_resources,
    why,
)
from moodle_cfn.errors import CALL_ERRORS, AwsFailure, InputError, one_line
from moodle_cfn.publish import aws_error

# Exit codes a script can rely on (2 is bad input, as for every command).
EXIT_OK = 0
EXIT_REFUSED = 3
EXIT_FAILED = 4

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
# Outputs worth printing at the end of a run.
KEY_OUTPUTS = ("SiteUrl", "MoodleAdminSecretArn", "DashboardName")
CANCELLED = ("cancelled", "canceled")
BAR_WIDTH = 20
# Change sets this tool makes are named CHANGE_SET_PREFIX + a Unix time; only those are cleaned up.
CHANGE_SET_PREFIX = "moodle-cfn-"
# A change set that was made but never executed (a failed one, or one a run stopped before executing):
# the next deploy deletes it. One still being created belongs to a run in progress and is left alone.
LEFTOVER_STATUSES = frozenset({"CREATE_COMPLETE", "FAILED"})
LEFTOVER_EXECUTION_STATUSES = frozenset({"AVAILABLE", "UNAVAILABLE", "OBSOLETE", "EXECUTE_FAILED"})


@dataclass(frozen=True)
class StackProgress:
    """Where one stack of the site stands."""

    label: str
    status: str
    done: int
    total: int
    current: str

    def line(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else 0
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        current = f"  {self.current}" if self.current else ""
        return f"{self.label:<16} [{bar}] {self.done:>3}/{self.total:<3} {self.status}{current}"


def progress_of(label: str, status: str, resources: list[Mapping[str, Any]]) -> StackProgress:
    """Resources done (any *_COMPLETE) out of all, and the most recent one still in progress."""
    done = sum(1 for r in resources if r.get("ResourceStatus", "").endswith("_COMPLETE"))
    working = [r for r in resources if r.get("ResourceStatus", "").endswith("_IN_PROGRESS")]
    working.sort(key=lambda r: r.get("LastUpdatedTimestamp") or datetime.min)
    current = working[-1]["LogicalResourceId"] if working else ""
    return StackProgress(label, status, done, len(resources), current)


def root_cause(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first failure across all stacks: not a cancellation, not a nested stack reporting its child."""
    failures = [
        e
        for e in events
        if e.get("ResourceStatus", "").endswith("_FAILED")
        and not any(word in e.get("ResourceStatusReason", "").lower() for word in CANCELLED)
        and e.get("ResourceType") != NESTED_STACK_TYPE
    ]
    return min(failures, key=lambda e: e["Timestamp"]) if failures else None


def cloudformation_error(stack: str, error: BaseException) -> InputError:
    """One clear line for any failed CloudFormation call: credentials and profiles as `publish` says them,
    a refusal with CloudFormation's own message, anything else (an answer botocore cannot parse, the network)
    with its class and the start of its message."""
    if isinstance(error, NoCredentialsError | ProfileNotFound):
        return aws_error(stack, error)
    if isinstance(error, ClientError):
        message = " ".join(error.response.get("Error", {}).get("Message", str(error)).split())
        if "does not exist" in message:
            return InputError(stack, "no such stack in this account and region")
        return AwsFailure(stack, f"CloudFormation refused the request: {message}")
    return AwsFailure(stack, f"CloudFormation failed: {one_line(error)}")


def blocked_by(status: str, stack: str) -> str | None:
    """Why a stack in `status` cannot take a change set now, and what to do; None when it can.

    The states come from the CloudFormation User Guide ("Stack status codes"): a stack whose first create
    rolled back can only be deleted; UPDATE_ROLLBACK_FAILED needs ContinueUpdateRollback; an *_IN_PROGRESS
    stack is busy with another operation.
    """
    if status == "ROLLBACK_COMPLETE" or status == "ROLLBACK_FAILED":
        return (
            f"the stack's first create failed and rolled back ({status}); CloudFormation cannot update it. "
            f"Delete it (aws cloudformation delete-stack --stack-name {stack}), then deploy again"
        )
    if status == "UPDATE_ROLLBACK_FAILED":
        return (
            "the last update could not roll back (UPDATE_ROLLBACK_FAILED); fix the resource named in the "
            f"stack's events, then run aws cloudformation continue-update-rollback --stack-name {stack}"
        )
    if status == "DELETE_FAILED":
        return "the stack failed to delete (DELETE_FAILED); finish the delete before deploying again"
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        return f"another operation is running on the stack ({status}); wait for it (moodle-cfn status --stack {stack})"
    return None


class Site:
    """The site's stack and its nested stacks, through one CloudFormation client."""

    def __init__(self, client: Any, stack: str) -> None:
        self.client, self.stack = client, stack
        # Once a change set is made, its stack's id: unlike the name, it cannot point at an older stack
        # of the same name (one a failed first run left and this run deleted).
        self.stack_id: str | None = None
        # Whether the last change set creates the stack (rather than updating it).
        self.creating = False

    @property
    def ref(self) -> str:
        """How calls after the change set name the stack: by id when known, else by name."""
        return self.stack_id or self.stack

    def call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except CALL_ERRORS as error:
            raise cloudformation_error(self.stack, error) from None

    def status(self) -> str | None:
        """The stack's status; None when there is no such stack."""
        try:
            stacks = self.client.describe_stacks(StackName=self.stack)["Stacks"]
        except ClientError as error:
            if "does not exist" in error.response.get("Error", {}).get("Message", ""):
                return None
            raise cloudformation_error(self.stack, error) from None
        except CALL_ERRORS as error:
            raise cloudformation_error(self.stack, error) from None
        return stacks[0]["StackStatus"] if stacks else None

    def exists(self) -> bool:
        """Whether the stack exists with resources (a stack in REVIEW_IN_PROGRESS only holds change sets)."""
        return self.status() not in (None, "REVIEW_IN_PROGRESS")

    def leftover_change_sets(self) -> list[str]:
        """Ids of this tool's change sets that were made and never executed."""
        summaries = self.call("list_change_sets", StackName=self.stack).get("Summaries", [])
        return [
            s["ChangeSetId"]
            for s in summaries
            if s.get("ChangeSetName", "").startswith(CHANGE_SET_PREFIX)
            and s.get("Status") in LEFTOVER_STATUSES
            and s.get("ExecutionStatus") in LEFTOVER_EXECUTION_STATUSES
        ]

    def prepare(self) -> list[str]:
        """Make the stack ready for a new change set: refuse a state CloudFormation cannot change, and
        delete the change sets an earlier run left behind; the ids deleted."""
        status = self.status()
        if status is None:
            return []
        reason = blocked_by(status, self.stack)
        if reason:
            raise InputError(self.stack, reason)
        leftovers = self.leftover_change_sets()
        for change_set_id in leftovers:
            self.call("delete_change_set", ChangeSetName=change_set_id)
        if status == "REVIEW_IN_PROGRESS" and not self.call("list_change_sets", StackName=self.stack).get(
            "Summaries"
        ):
            # "REVIEW_IN_PROGRESS: ongoing creation of one or more stacks with an expected StackId but
            # without any templates or resources" (User Guide, stack status codes): an empty shell that a
            # failed first run leaves. Deleting it loses nothing and lets the next change set start clean.
            self.call("delete_stack", StackName=self.stack)
            try:
                self.client.get_waiter("stack_delete_complete").wait(
                    StackName=self.stack, WaiterConfig={"Delay": 5, "MaxAttempts": 60}
                )
            except CALL_ERRORS as error:
                raise cloudformation_error(self.stack, error) from None
        return leftovers

    def describe(self) -> Mapping[str, Any]:
        return self.call("describe_stacks", StackName=self.ref)["Stacks"][0]

    def nested(self) -> list[tuple[str, str]]:
        """(logical id, stack id) of each nested stack that exists so far."""
        resources = self.call("list_stack_resources", StackName=self.ref)["StackResourceSummaries"]
        return [
            (r["LogicalResourceId"], r["PhysicalResourceId"])
            for r in resources
            if r["ResourceType"] == NESTED_STACK_TYPE and r.get("PhysicalResourceId")
        ]

    def progress(self) -> list[StackProgress]:
        """One line's worth per stack: the site's own, then each nested stack."""
        root = self.describe()
        lines = [progress_of(ROOT_LABEL, root["StackStatus"], self.resources(self.ref))]
        for label, stack_id in self.nested():
            status = self.call("describe_stacks", StackName=stack_id)["Stacks"][0]["StackStatus"]
            lines.append(progress_of(label, status, self.resources(stack_id)))
        return lines

    def resources(self, stack_id: str) -> list[Mapping[str, Any]]:
        return self.call("list_stack_resources", StackName=stack_id)["StackResourceSummaries"]

    def events_since(self, since: datetime) -> list[Mapping[str, Any]]:
        events = []
        for stack_id in [self.ref, *(stack_id for _, stack_id in self.nested())]:
            answer = self.call("describe_stack_events", StackName=stack_id)["StackEvents"]
            events.extend(e for e in answer if e["Timestamp"] >= since)
        return events

    def change_set(
        self,
        template_url: str,
        parameters: Mapping[str, str],
        name: str,
        tags: Mapping[str, str] | None = None,
        role_arn: str | None = None,
    ) -> tuple[str, list[Change]]:
        """Create the change set (nested stacks included), wait for it, return its id and changes.

        Stack tags go to every nested stack and every resource that takes tags (CloudFormation propagates
        them), so they can serve as cost-allocation tags; `role_arn` is the service role CloudFormation acts as.
        """
        self.creating = not self.exists()
        optional: dict[str, Any] = {}
        if tags:
            optional["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
        if role_arn:
            optional["RoleARN"] = role_arn
        created = self.call(
            "create_change_set",
            StackName=self.stack,
            ChangeSetName=name,
            ChangeSetType="CREATE" if self.creating else "UPDATE",
            TemplateURL=template_url,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
            Capabilities=CAPABILITIES,
            IncludeNestedStacks=True,
            **optional,
        )
        change_set_id = created["Id"]
        self.stack_id = created.get("StackId")
        try:
            self.client.get_waiter("change_set_create_complete").wait(
                ChangeSetName=change_set_id, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
            )
        except WaiterError:
            answer = self.call("describe_change_set", ChangeSetName=change_set_id)
            reason = " ".join(answer.get("StatusReason", "").split())
            if "didn't contain changes" in reason or "No updates" in reason:
                return change_set_id, []
            # A failed change set changes nothing; deleting it leaves the stack as it was.
            self.call("delete_change_set", ChangeSetName=change_set_id)
            raise InputError(
                self.stack, f"the change set failed (deleted, nothing was changed): {reason}"
            ) from None
        except CALL_ERRORS as error:
            raise cloudformation_error(self.stack, error) from None

        def describe(identifier: str) -> Mapping[str, Any]:
            return self.call("describe_change_set", ChangeSetName=identifier)

        return change_set_id, changes_of(describe, change_set_id)


def terminal(status: str) -> bool:
    """Whether CloudFormation is done with the stack (a *_CLEANUP_IN_PROGRESS is not done)."""
    return status.endswith("_COMPLETE") or status.endswith("_FAILED")


def succeeded(status: str) -> bool:
    return status in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")


def watch(
    site: Site, out: TextIO, interactive: bool, interval: float, clock: Callable[[], float] = time.monotonic
) -> str:
    """Show progress until the site's stack ends; its final status."""
    shown: list[str] = []
    while True:
        lines = [p.line() for p in site.progress()]
        if interactive and shown:
            out.write(f"\x1b[{len(shown)}F")  # back to the first line, then redraw every stack in place
            out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        elif lines != shown:
            out.write("".join(f"{line}\n" for line in lines if line not in shown))
        out.flush()
        shown = lines
        status = site.describe()["StackStatus"]
        if terminal(status):
            return status
        time.sleep(interval)


def outputs_text(stack: Mapping[str, Any]) -> str:
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return "".join(f"  {key}: {outputs[key]}\n" for key in KEY_OUTPUTS if key in outputs)


def status_text(site: Site) -> str:
    """`moodle-cfn status`: every stack's state and the outputs that matter."""
    lines = [p.line() for p in site.progress()]
    return "\n".join(lines) + "\n" + outputs_text(site.describe())


@dataclass(frozen=True)
class DeployOptions:
    """How far to go and what to allow: --preview, --yes, --allow-replace, and whether a person is there."""

    preview_only: bool = False
    assume_yes: bool = False
    interactive: bool = False
    allowed: frozenset[str] = frozenset()
    interval: float = 10.0
    # Stack tags (propagated to every resource that takes tags), the service role, and whether a stack this
    # run creates gets termination protection once it is complete.
    tags: Mapping[str, str] = field(default_factory=dict)
    role_arn: str | None = None
    protect: bool = False


NO_TERMINAL = (
    "refused: no terminal to confirm on (stdin or stdout is not a TTY); nothing was changed. "
    "Run again with --yes to deploy without asking, or --preview to only show the changes."
)


def execute(site: Site, change_set_id: str) -> None:
    """Execute the change set; when the call fails, delete the change set if CloudFormation did not start
    it, so the next deploy starts clean, and say where the stack stands."""
    try:
        site.client.execute_change_set(ChangeSetName=change_set_id)
    except CALL_ERRORS as error:
        failure = cloudformation_error(site.stack, error)
        try:
            site.client.delete_change_set(ChangeSetName=change_set_id)
            after = "the change set was deleted and nothing was changed"
        except CALL_ERRORS:
            after = f"check moodle-cfn status --stack {site.stack}; the next deploy deletes a change set left over"
        raise AwsFailure(site.stack, f"{failure.reason} ({after})") from None


def run_deploy(
    site: Site,
    template_url: str,
    parameters: Mapping[str, str],
    options: DeployOptions,
    out: TextIO,
    ask: Callable[[str], str] = input,
    started_at: datetime | None = None,
) -> int:
    """Preview, guard, (confirm,) execute and watch; the exit code. `started_at` (now by default) is where
    the search for the root cause of a failure begins."""
    for leftover in site.prepare():
        out.write(f"deleted a change set an earlier run left unexecuted: {leftover}\n")
    change_set_id, changes = site.change_set(
        template_url,
        parameters,
        f"{CHANGE_SET_PREFIX}{time.time_ns() // 1_000_000}",
        options.tags,
        options.role_arn,
    )
    out.write(preview_table(changes))

    def discard(message: str, code: int) -> int:
        site.call("delete_change_set", ChangeSetName=change_set_id)
        out.write(message + "\n")
        return code

    blocked = refused(changes, options.allowed)
    if blocked:
        names = ", ".join(f"{c.logical_id} ({c.resource_type}, {c.kind})" for c in blocked)
        return discard(
            f"refused: this change would {'/'.join(sorted({c.kind for c in blocked}))} data the site keeps: {names}. "
            "Nothing was changed. If that is intended, allow each by name with --allow-replace NAME.",
            EXIT_REFUSED,
        )
    moved = removed_layers(changes)
    if moved:
        return discard(
            f"refused: this change removes {', '.join(c.logical_id for c in moved)}: ExistingVpcId changed since "
            "the first deploy, and the database, caches and file system cannot move to another network in "
            "place. Nothing was changed. Keep ExistingVpcId as it was deployed, or restore the site's backups "
            "into a new stack.",
            EXIT_REFUSED,
        )
    if not changes:
        return discard("nothing to deploy: the stack already matches", EXIT_OK)
    if options.preview_only:
        return discard("preview only: nothing was changed", EXIT_OK)
    if not options.assume_yes and not options.interactive:
        # A pipe or a CI job has nobody to answer; deploying without an explicit --yes would surprise.
        return discard(NO_TERMINAL, EXIT_REFUSED)
    if not options.assume_yes and ask("Deploy these changes? [y/N] ").strip().lower() not in ("y", "yes"):
        return discard("not deployed: nothing was changed", EXIT_REFUSED)

    started_at, started = started_at or datetime.now().astimezone(), time.monotonic()
    execute(site, change_set_id)
    status = watch(site, out, options.interactive, options.interval)
    elapsed = f"{(time.monotonic() - started) / 60:.1f} min"
    if succeeded(status):
        out.write(f"{site.stack}: {status} in {elapsed}\n{outputs_text(site.describe())}")
        if site.creating and options.protect:
            # Only once the create succeeded: a protected stack would have to be unprotected before a
            # failed first create (ROLLBACK_COMPLETE) could be deleted.
            site.call("update_termination_protection", EnableTerminationProtection=True, StackName=site.stack)
            out.write(
                f"termination protection is on: aws cloudformation update-termination-protection "
                f"--no-enable-termination-protection --stack-name {site.stack} turns it off before a delete\n"
            )
        return EXIT_OK
    out.write(f"{site.stack}: {status} after {elapsed}\n")
    cause = root_cause(site.events_since(started_at))
    if cause:
        out.write(
            f"root cause: {cause['LogicalResourceId']} ({cause['ResourceType']}) in {cause.get('StackName', '?')}: "
            f"{cause.get('ResourceStatusReason', 'no reason given')}\n"
        )
    return EXIT_FAILED
