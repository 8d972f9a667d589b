"""The AWS APIs a web node calls, on loopback: a moto server for Secrets Manager and S3, and a stand-in for
the calls moto cannot answer the way a node needs, with the response shapes of the API references:
ElastiCache DescribeCacheClusters (moto keeps no cache node endpoints), Auto Scaling
CompleteLifecycleAction and DescribeAutoScalingGroups (moto has no lifecycle actions), CloudFormation
SignalResource, RecordLifecycleActionHeartbeat. The stand-in records every call, so the rehearsal can assert what a node reported."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rehearsal",
    "AWS_SECRET_ACCESS_KEY": "rehearsal",
    "AWS_DEFAULT_REGION": REGION,
}


def describe_cache_clusters_xml(cluster_id: str, nodes: list[tuple[str, int]]) -> str:
    """DescribeCacheClusters' answer for one memcached cluster and its node endpoints."""
    members = "".join(
        f"<CacheNode><CacheNodeId>{index:04d}</CacheNodeId><CacheNodeStatus>available</CacheNodeStatus>"
        f"<Endpoint><Address>{escape(host)}</Address><Port>{port}</Port></Endpoint></CacheNode>"
        for index, (host, port) in enumerate(nodes, start=1)
    )
    return (
        '<DescribeCacheClustersResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">'
        "<DescribeCacheClustersResult><CacheClusters><CacheCluster>"
        f"<CacheClusterId>{escape(cluster_id)}</CacheClusterId><Engine>memcached</Engine>"
        f"<CacheClusterStatus>available</CacheClusterStatus><NumCacheNodes>{len(nodes)}</NumCacheNodes>"
        f"<CacheNodes>{members}</CacheNodes>"
        "</CacheCluster></CacheClusters></DescribeCacheClustersResult>"
        "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>"
        "</DescribeCacheClustersResponse>"
    )


def query_response(action: str, namespace: str, result: str = "") -> str:
    """An AWS Query-protocol answer: <ActionResponse><ActionResult>...</ActionResult><ResponseMetadata>."""
    return (
        f'<{action}Response xmlns="{namespace}"><{action}Result>{result}</{action}Result>'
        "<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )


AUTOSCALING_NS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
CLOUDFORMATION_NS = "http://cloudformation.amazonaws.com/doc/2010-05-15/"
STANDIN_SERVICES = ("ELASTICACHE", "AUTO_SCALING", "CLOUDFORMATION")


@dataclass
class Aws:
    """Endpoints and clients of the rig's AWS: `environment` is what a node's aws CLI needs. `groups` maps an
    Auto Scaling group to its launch template version; `calls` lists the stand-in's calls, in order."""

    moto_url: str
    standin_url: str
    clusters: dict[str, list[tuple[str, int]]]
    groups: dict[str, str] = field(default_factory=dict)
    calls: list[dict[str, str]] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, str]:
        standin = {f"AWS_ENDPOINT_URL_{service}": self.standin_url for service in STANDIN_SERVICES}
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.moto_url, **standin}

    def calls_of(self, action: str, instance_id: str) -> list[dict[str, str]]:
        """The stand-in's calls of `action` about one instance (by InstanceId or UniqueId)."""
        return [
            call
            for call in self.calls
            if call["Action"] == action and instance_id in (call.get("InstanceId"), call.get("UniqueId"))
        ]

    def client(self, service: str):
        return boto3.client(service, region_name=REGION, endpoint_url=self.moto_url, aws_access_key_id="rehearsal",
                            aws_secret_access_key="rehearsal")  # fmt: skip

    def secret(self, name: str, value: dict[str, str]) -> str:
        """A Secrets Manager secret holding `value` as JSON; its ARN."""
        return self.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))["ARN"]

    def upload(self, bucket: str, key: str, path: str) -> str:
        """An S3 object from a local file; its s3:// URI."""
        s3 = self.client("s3")
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(path, bucket, key)
        return f"s3://{bucket}/{key}"


@contextmanager
def running_aws() -> Iterator[Aws]:
    """A moto server and the stand-in, both on 127.0.0.1, for the duration."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    aws = Aws(f"http://{host}:{port}", "", {})

    def answer(form: dict[str, str]) -> tuple[int, str]:
        action = form.get("Action", "")
        if action == "DescribeCacheClusters" and form.get("CacheClusterId") in aws.clusters:
            return 200, describe_cache_clusters_xml(
                form["CacheClusterId"], aws.clusters[form["CacheClusterId"]]
            )
        if action in ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat") and (
            form.get("AutoScalingGroupName") in aws.groups
        ):
            return 200, query_response(action, AUTOSCALING_NS)
        if action == "DescribeAutoScalingGroups":
            name = form.get("AutoScalingGroupNames.member.1", "")
            version = aws.groups.get(name)
            member = (
                f"<member><AutoScalingGroupName>{escape(name)}</AutoScalingGroupName><LaunchTemplate>"
                f"<LaunchTemplateId>lt-0rehearsal</LaunchTemplateId><Version>{version}</Version>"
                "</LaunchTemplate></member>"
                if version
                else ""
            )
            return 200, query_response(
                action, AUTOSCALING_NS, f"<AutoScalingGroups>{member}</AutoScalingGroups>"
            )
        if action == "SignalResource":
            metadata = "<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata>"
            return (
                200,
                f'<SignalResourceResponse xmlns="{CLOUDFORMATION_NS}">{metadata}</SignalResourceResponse>',
            )

        return 400, (
            "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
            f"<Message>the rehearsal's stand-in does not know {escape(action)} {escape(str(form))}</Message>"
            "</Error></ErrorResponse>"
        )

    class StandIn(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            form = {key: values[0] for key, values in raw.items()}
            aws.calls.append(form)
            status, text = answer(form)
            self.send_response(status)
            body = text.encode()
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    aws.standin_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield aws
    finally:
        server.shutdown()
        moto.stop()


class Imds:
    """A node's instance metadata service (IMDSv2: a token from PUT, then GETs carrying it), answering from
    `metadata`, which the rehearsal may change (a node's target lifecycle state, say)."""

    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.reply(200, "rehearsal-token")

            def do_GET(self) -> None:
                path = self.path.removeprefix("/latest/meta-data/")
                if self.headers.get("X-aws-ec2-metadata-token") != "rehearsal-token":
                    self.reply(401, "")
                elif path in imds.metadata:
                    self.reply(200, imds.metadata[path])
                else:
                    self.reply(404, "")

            def reply(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
