"""The nested layers, in deployment order. The master template wires exactly these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from troposphere import Template

from moodle_cfn.checks import Check
from moodle_cfn.common import OperatorParameter
from moodle_cfn.layers import app, cache, data, network


@dataclass(frozen=True)
class Layer:
    """One nested stack: its builder, the operator parameters it introduces, and their cross-checks."""

    name: str
    build: Callable[[], Template]
    parameters: tuple[OperatorParameter, ...]
    checks: tuple[Check, ...] = ()

    @property
    def file_name(self) -> str:
        """File the template is written to, and the key it is published under."""
        return f"{self.name}.yaml"

    @property
    def stack_title(self) -> str:
        """Logical id of the nested stack resource in the master template."""
        return f"{self.name.capitalize()}Stack"


LAYERS: tuple[Layer, ...] = (
    Layer("network", network.build, network.PARAMETERS, network.CHECKS),
    Layer("data", data.build, data.PARAMETERS, data.CHECKS),
    Layer("cache", cache.build, cache.PARAMETERS, cache.CHECKS),
    Layer("app", app.build, app.PARAMETERS, app.CHECKS),
)


def all_checks() -> tuple[Check, ...]:
    """Every layer's cross-parameter checks, in layer order."""
    return tuple(check for layer in LAYERS for check in layer.checks)
