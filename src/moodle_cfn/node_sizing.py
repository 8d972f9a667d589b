"""How many PHP-FPM workers a web node runs: the rule bootstrap/php-fpm-size.sh applies on the node at boot
(from its MemTotal and vCPUs), applied here to an instance type's nominal memory to budget the database
connections of the largest fleet (layers/connections.py). Both read the rule's constants from
bootstrap/php-fpm-sizing.json and PHP's limits from bootstrap/php-moodle.ini; a test runs the shell rule
against this one for every instance type the template admits."""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from moodle_cfn import bootstrap


class InstanceSize(NamedTuple):
    vcpus: int
    memory_gib: int


# vCPUs and memory of the web instance types WebInstanceType admits (EC2 Instance Types guide, "General
# purpose", "Compute optimized", "Memory optimized" specifications).
INSTANCE_SIZES = {
    "t4g.medium": InstanceSize(2, 4), "t4g.large": InstanceSize(2, 8), "t4g.xlarge": InstanceSize(4, 16),
    "t3.medium": InstanceSize(2, 4), "t3.large": InstanceSize(2, 8),
    **{f"{family}.{size}": InstanceSize(vcpus, vcpus * gib_per_vcpu)
       for family, gib_per_vcpu in (("c7g", 2), ("c7i", 2), ("m7g", 4), ("m7i", 4))
       for size, vcpus in (("large", 2), ("xlarge", 4), ("2xlarge", 8), ("4xlarge", 16))},
    "r7g.large": InstanceSize(2, 16), "r7g.xlarge": InstanceSize(4, 32),
}  # fmt: skip


def php_size_mib(value: str) -> int:
    """A php.ini size ("512M", "1G") in MiB."""
    units = {"G": 1024, "M": 1, "K": 1 / 1024}
    suffix = value[-1].upper()
    return int(int(value[:-1]) * units[suffix]) if suffix in units else int(value) // 1048576


def ini_value(text: str, key: str) -> str:
    """The last `key = value` of an ini file."""
    found = re.findall(rf"^{re.escape(key)}\s*=\s*([^\s;]*)", text, re.M)
    if not found:
        raise ValueError(f"php-moodle.ini has no {key}")
    return found[-1]


def fpm_workers(memory_mib: int, vcpus: int) -> int:
    """pm.max_children for a node with this much memory and these vCPUs (php-fpm-size.sh, the same rule)."""
    rule = json.loads(bootstrap.read("php-fpm-sizing.json"))
    ini = bootstrap.read("php-moodle.ini")
    memory_limit = php_size_mib(ini_value(ini, "memory_limit"))
    shared = int(ini_value(ini, "opcache.memory_consumption")) + php_size_mib(ini_value(ini, "apc.shm_size"))
    reserved = rule["system_reserve_mib"] + shared + memory_limit
    worker = int(memory_limit * rule["worker_fraction_of_memory_limit"])
    by_memory = (memory_mib - reserved) // worker
    return max(rule["min_workers"], min(by_memory, vcpus * rule["workers_per_vcpu"]))


def instance_fpm_workers(instance_type: str) -> int:
    """The most workers a node of this type runs (its nominal memory; the kernel reports a little less)."""
    size = INSTANCE_SIZES[instance_type]
    return fpm_workers(size.memory_gib * 1024, size.vcpus)
