"""The PHP-FPM pool a node sizes for itself at boot (bootstrap/php-fpm-size.sh) and the rule the database
budget applies to the instance type (node_sizing.py): the same numbers, and numbers that fit the node."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from moodle_cfn import node_sizing
from moodle_cfn.layers import web_node
from tests.test_moodle import BOOTSTRAP_DIR

# The node's script reads its constants with jq (the node installs it); .ci/run installs it and sets
# MOODLE_CFN_REQUIRE_JQ, so CI never skips the comparison.
needs_jq = pytest.mark.skipif(
    shutil.which("jq") is None and not os.environ.get("MOODLE_CFN_REQUIRE_JQ"),
    reason="jq is not installed (the node's php-fpm-size.sh reads its constants with it; .ci/run installs it)",
)


def node_rule(memory_mib: int, vcpus: int) -> list[int]:
    """(max_children, start, min spare, max spare, listen backlog, mod_proxy's page connections, Apache's
    threads) as the node's script computes them."""
    result = subprocess.run(["bash", str(BOOTSTRAP_DIR / "php-fpm-size.sh"), str(memory_mib), str(vcpus)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return [int(n) for n in result.stdout.split()]


def test_every_web_instance_type_has_its_size():
    assert set(node_sizing.INSTANCE_SIZES) == set(web_node.GRAVITON_TYPES + web_node.X86_TYPES)


@needs_jq
@pytest.mark.parametrize("instance_type", sorted(node_sizing.INSTANCE_SIZES))
def test_the_node_and_the_budget_apply_the_same_rule(instance_type):
    size = node_sizing.INSTANCE_SIZES[instance_type]
    memory = size.memory_gib * 1024
    assert node_rule(memory, size.vcpus)[0] == node_sizing.instance_fpm_workers(instance_type)
    # The kernel reports less than the nominal memory: the node never runs more workers than were budgeted.
    assert node_rule(int(memory * 0.93), size.vcpus)[0] <= node_sizing.instance_fpm_workers(instance_type)


@needs_jq
@pytest.mark.parametrize("memory_mib", [2048, 3800, 4096, 7800, 16000, 65536])
@pytest.mark.parametrize("vcpus", [2, 4, 16])
def test_the_pool_fits_the_memory_with_room_for_cron_and_the_system(memory_mib, vcpus):
    children, start, min_spare, max_spare, *_ = node_rule(memory_mib, vcpus)
    assert 4 <= children <= 8 * vcpus
    # Every worker at a quarter of memory_limit (512M), one cron run at the full limit, OPcache and APCu
    # (320 MiB) and 512 MiB for the system fit, unless the floor of 4 workers applies.
    assert children == 4 or children * 128 + 512 + 320 + 512 <= memory_mib
    assert min_spare <= start <= max_spare <= children


@needs_jq
def test_the_rule_changes_with_php_memory_limit(tmp_path):
    ini = (BOOTSTRAP_DIR / "php-moodle.ini").read_text().replace("memory_limit = 512M", "memory_limit = 1G")
    (tmp_path / "php-moodle.ini").write_text(ini)
    (tmp_path / "php-fpm-sizing.json").write_text((BOOTSTRAP_DIR / "php-fpm-sizing.json").read_text())
    (tmp_path / "php-fpm-size.sh").write_text((BOOTSTRAP_DIR / "php-fpm-size.sh").read_text())
    result = subprocess.run(["bash", str(tmp_path / "php-fpm-size.sh"), "4096", "4"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    # (4096 - 512 - 320 - 1024) / 256
    assert result.stdout.split()[0] == "8"


@needs_jq
@pytest.mark.parametrize("instance_type", sorted(node_sizing.INSTANCE_SIZES))
def test_apache_has_a_thread_for_every_page_the_pool_holds_and_the_health_check(instance_type):
    """Pages beyond the pool's workers and queue are refused (503), so Apache's threads never run out and the
    load balancer's check never waits in the kernel's accept queue behind pages."""
    size = node_sizing.INSTANCE_SIZES[instance_type]
    children, *_, backlog, page_connections, threads = node_rule(size.memory_gib * 1024, size.vcpus)
    # The queue holds queue_seconds (10 s) of pages at 10 pages per vCPU per second.
    assert backlog == size.vcpus * 100 <= 4096  # the kernel's somaxconn caps a listen backlog
    assert page_connections == children + backlog
    assert threads == page_connections + 32
