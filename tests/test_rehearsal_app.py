"""Deploy rehearsal of the app layer in moto, after the network, data and cache layers.

dev.yaml deploys as written (CloudFront's own name, no certificate); production.yaml gets a domain and a
certificate requested from moto's ACM first (tests/conftest.py: rehearsal_overrides), so its HTTPS side
is exercised too. moto cannot create CloudFront (the distribution, its VPC origin and policies),
ACM-issued certificates in the stack, Secrets Manager secrets or a prefix-list security group rule: those
are named placeholders (tests/rehearsal.py), so that CloudFront really reaches the internal load balancer
through the VPC origin is checked only against the documentation (edge.py). It does
create the launch template, the Auto Scaling group (which launches instances), the load balancer, target
group and listeners, the instance role and profile and the log groups, which this test checks through
the EC2, Auto Scaling and ELB APIs. moto runs no user data, so no instance ever signals or turns healthy.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest


@pytest.fixture(scope="module", params=["dev.yaml", "production.yaml"])
def stacks(request, rehearsal) -> dict[str, Any]:
    return rehearsal(request.param)


def test_group_launches_its_instances_into_the_private_app_subnets(aws, stacks):
    app, network = stacks["AppStack"], stacks["NetworkStack"]
    autoscaling = boto3.client("autoscaling", **aws)
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[app["outputs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    desired = int(app["parameters"]["WebDesiredCapacity"])
    assert (group["MinSize"], group["DesiredCapacity"]) == (int(app["parameters"]["WebMinSize"]), desired)
    assert len(group["Instances"]) == desired
    app_subnets = set(network["outputs"]["AppSubnetIds"].split(","))
    ec2 = boto3.client("ec2", **aws)
    ids = [i["InstanceId"] for i in group["Instances"]]
    instances = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    assert {i["SubnetId"] for i in instances} <= app_subnets
    assert not [i for i in instances if i.get("PublicIpAddress")]
    assert {i["InstanceType"] for i in instances} == {app["parameters"]["WebInstanceType"]}


def test_instances_are_registered_with_the_target_group(aws, stacks):
    app = stacks["AppStack"]
    elb = boto3.client("elbv2", **aws)
    autoscaling = boto3.client("autoscaling", **aws)
    (group,) = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[app["outputs"]["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    (target_group_arn,) = group["TargetGroupARNs"]
    (target_group,) = elb.describe_target_groups(TargetGroupArns=[target_group_arn])["TargetGroups"]
    assert target_group["HealthCheckPath"] == "/lb-health"
    targets = elb.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
    assert {t["Target"]["Id"] for t in targets} == {i["InstanceId"] for i in group["Instances"]}


def listeners(aws: dict[str, Any], app: dict[str, Any]) -> dict[int, dict[str, Any]]:
    elb = boto3.client("elbv2", **aws)
    (balancer,) = [
        b
        for b in elb.describe_load_balancers()["LoadBalancers"]
        if b["DNSName"] == app["outputs"]["LoadBalancerDnsName"]
    ]
    # Both params files put CloudFront in front: the load balancer is internal, in the app subnets.
    assert balancer["Scheme"] == "internal"
    assert {zone["SubnetId"] for zone in balancer["AvailabilityZones"]} == set(
        app["parameters"]["AppSubnetIds"].split(",")
    )
    return {
        item["Port"]: item
        for item in elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    }


def test_http_listener_redirects_when_the_site_has_a_certificate(aws, rehearsal):
    by_port = listeners(aws, rehearsal("production.yaml")["AppStack"])
    (action,) = by_port[80]["DefaultActions"]
    assert action["Type"] == "redirect"
    assert (action["RedirectConfig"]["Protocol"], action["RedirectConfig"]["StatusCode"]) == (
        "HTTPS",
        "HTTP_301",
    )
    assert by_port[443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    # The HSTS listener attribute is not asserted here: moto 5.2's CloudFormation drops ListenerAttributes
    # (describe_listener_attributes answers only its tcp.idle_timeout.seconds default); see test_origin_access.


def test_without_a_certificate_http_answers_only_cloudfront(aws, rehearsal):
    by_port = listeners(aws, rehearsal("dev.yaml")["AppStack"])
    assert set(by_port) == {80}
    (action,) = by_port[80]["DefaultActions"]
    assert action["Type"] == "fixed-response" and action["FixedResponseConfig"]["StatusCode"] == "403"
