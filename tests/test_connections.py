"""The database-connection budget: the largest web fleet against Aurora's max_connections."""

from __future__ import annotations

import pytest

from moodle_cfn.cli import main
from moodle_cfn.layers import connections, database

BASE = {"DatabaseCapacityMode": "provisioned", "DatabaseInstanceClass": "db.r7g.large", "DatabaseMinCapacity": "0.5",
        "DatabaseMaxCapacity": "16", "WebMaxSize": "6", "WebInstanceType": "m7g.large"}  # fmt: skip


def test_every_instance_class_the_template_admits_has_its_memory():
    assert set(connections.CLASS_MEMORY_GIB) == set(database.INSTANCE_CLASSES)


def test_the_pool_size_follows_the_instance_type():
    assert connections.fpm_max_children(BASE) == 16  # 2 vCPUs x 8
    assert connections.fpm_max_children({**BASE, "WebInstanceType": "m7g.4xlarge"}) == 128
    # Twice the workers per node halves the nodes the same database admits.
    large = {**BASE, "WebInstanceType": "m7g.xlarge", "WebMaxSize": "100"}
    assert "use at most 22 nodes" in connections.connections_problem(large)[1]


def test_max_connections_follows_the_aurora_formula():
    # db.r4.large's 15.25 GiB give 1600 in the Aurora User Guide; 16 GiB at 90% usable give 1510.
    assert connections.max_connections(BASE) == (1510, "db.r7g.large")
    assert connections.max_connections({**BASE, "DatabaseInstanceClass": "db.r7g.8xlarge"})[0] == 5000
    serverless = {**BASE, "DatabaseCapacityMode": "serverless-v2"}
    assert connections.max_connections({**serverless, "DatabaseMaxCapacity": "1"})[0] == 188  # AWS: 189
    assert connections.max_connections({**serverless, "DatabaseMaxCapacity": "64"})[0] == 2000
    assert (
        connections.max_connections({**serverless, "DatabaseMinCapacity": "1", "DatabaseMaxCapacity": "64"})[
            0
        ]
        == 5000
    )


def test_a_fleet_within_the_budget_passes_and_one_over_it_is_refused():
    assert connections.connections_problem(BASE) is None
    key, reason = connections.connections_problem(
        {**BASE, "WebMaxSize": "100", "DatabaseInstanceClass": "db.t4g.medium"}
    )
    assert key == "WebMaxSize"
    assert "db.t4g.medium allows" in reason and "use at most" in reason


@pytest.mark.parametrize("command", ["validate", "params"])
def test_too_many_nodes_for_the_database_is_one_line_naming_file_and_key(tmp_path, capsys, command):
    path = tmp_path / "p.yaml"
    path.write_text("TemplatesBucketName: my-bucket\nDatabaseCapacityMode: serverless-v2\nDatabaseMaxCapacity: 1\n"
                    "WebMaxSize: 12\n")  # fmt: skip
    assert main([command, str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(
        f"moodle-cfn: error: {path}: WebMaxSize: 12 m7g.large web nodes x (16 PHP-FPM workers x 2"
    ), err
    assert "DatabaseMaxCapacity 1 ACU allows" in err
