"""The nested layers, in deployment order. The master template wires exactly these."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from troposphere import Template

from moodle_cfn.checks import Check
from moodle_cfn.common import OperatorParameter
from moodle_cfn.layers import app, cache, data, existing_vpc, monitoring, network, protection
from moodle_cfn.operator_checks import operator_checks
from moodle_cfn.params import Expander


@dataclass(frozen=True)
class Layer:
    """One nested stack: its builder, the operator parameters it introduces, and their cross-checks."""

    name: str
    build: Callable[[], Template]
    parameters: tuple[OperatorParameter, ...]
    checks: tuple[Check, ...] = ()
    # Params-file keys that stand for several parameters, e.g. a list of scaling windows.
    expanders: Mapping[str, Expander] = field(default_factory=dict)
    # Created only once every earlier layer's stack is complete, not only those it reads outputs from.
    after_every_earlier_layer: bool = False
    # The master condition under which the nested stack exists (None: always).
    condition: str | None = None

    @property
    def file_name(self) -> str:
        """File the template is written to, and the key it is published under."""
        return f"{self.name}.yaml"

    @property
    def stack_title(self) -> str:
        """Logical id of the nested stack resource in the master template."""
        return f"{self.name.capitalize()}Stack"


LAYERS: tuple[Layer, ...] = (
    Layer("network", network.build, network.PARAMETERS, network.CHECKS, condition=existing_vpc.CREATES_VPC),
    # In an existing VPC, instead of the network layer: its security groups alone (layers/existing_vpc.py).
    Layer(
        "security",
        existing_vpc.build,
        existing_vpc.PARAMETERS,
        existing_vpc.CHECKS,
        condition=existing_vpc.USES_EXISTING_VPC,
    ),
    Layer("data", data.build, data.PARAMETERS, data.CHECKS),
    Layer("cache", cache.build, cache.PARAMETERS, cache.CHECKS),
    Layer("app", app.build, app.PARAMETERS, app.CHECKS, app.EXPANDERS),
    Layer("monitoring", monitoring.build, monitoring.PARAMETERS),
    # Last, after everything that can fail: a protected cluster would stop the rollback of a failed create.
    Layer("protection", protection.build, protection.PARAMETERS, after_every_earlier_layer=True),
)


def all_expanders() -> dict[str, Expander]:
    """Every layer's structured params-file keys."""
    return {key: expand for layer in LAYERS for key, expand in layer.expanders.items()}


def all_checks() -> tuple[Check, ...]:
    """The checks every params file gets (whole numbers, windows), then each layer's, in layer order."""
    numbers = [p.name for layer in LAYERS for p in layer.parameters if p.parameter.Type == "Number"]
    return (*operator_checks(numbers), *(check for layer in LAYERS for check in layer.checks))
