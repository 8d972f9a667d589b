"""The Moodle web tier as the app layer takes it: its operator parameters in console order, its checks,
params-file expanders and conditions.

The pieces: web_node.py (instance type, AMI, role, launch template, user data, logs), auto_scaling.py (the
group, its hooks, target tracking and warm pool) and scaling_windows.py (exam-time schedules).
"""

from __future__ import annotations

from troposphere import Template

from moodle_cfn.common import OperatorParameter
from moodle_cfn.layers import auto_scaling, scaling_windows, web_node

# The order of the console form's "web" group: what a node is, how many, how they scale, their logs.
PARAMETERS: tuple[OperatorParameter, ...] = (
    web_node.WEB_INSTANCE_TYPE,
    auto_scaling.WEB_MIN_SIZE,
    auto_scaling.WEB_MAX_SIZE,
    auto_scaling.WEB_DESIRED_CAPACITY,
    web_node.WEB_ROOT_VOLUME_GIB,
    auto_scaling.WEB_CPU_TARGET,
    auto_scaling.WEB_REQUESTS_TARGET,
    auto_scaling.WEB_WARM_POOL,
    auto_scaling.WEB_WARM_POOL_SIZE,
    web_node.APP_LOG_RETENTION_DAYS,
    *scaling_windows.PARAMETERS,
)
CHECKS = (*auto_scaling.SIZE_CHECKS, *scaling_windows.CHECKS)
EXPANDERS = scaling_windows.EXPANDERS


def add_conditions(template: Template) -> None:
    """Architecture, warm pool and schedule-window switches."""
    web_node.add_conditions(template)
    auto_scaling.add_conditions(template)
    scaling_windows.add_conditions(template)
