"""The AWS APIs a web node calls, on loopback: a moto server for Secrets Manager, S3 and SSM, and a stand-in for
the calls moto cannot answer the way a node needs, with the response shapes of the API references:
ElastiCache DescribeCacheClusters (moto keeps no cache node endpoints), Auto Scaling
CompleteLifecycleAction and DescribeAutoScalingGroups (moto has no lifecycle actions), CloudFormation
SignalResource, RecordLifecycleActionHeartbeat. The stand-in records every call, so the rehearsal can assert what a node reported.
CloudWatch PutMetricData arrives in the JSON protocol the node's AWS CLI prefers, which moto does not
speak: the stand-in replays it to moto in the Query protocol (`Aws.metric_data` keeps each request).

The stand-in is the nodes' only AWS endpoint (AWS_ENDPOINT_URL): what it does not answer it forwards to moto.
So it sees every request a node makes and records each as IAM sees it (`Aws.node_calls`: action, resource
ARN, condition keys), for tests/node_rig/iam_check.py to evaluate against the stack's own policies. The
rig's platform file reports each EFS mount to it too (`/rig/efs-mount`), since a bind mount calls no API.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

import boto3
from moto.server import ThreadedMotoServer

from tests.node_rig.iam_check import ACCOUNT, GROUP_ID, NodeCall, StackState

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
# The services the stand-in answers, by their SigV4 signing names.
STANDIN_SERVICES = ("elasticache", "autoscaling", "cloudformation")
# Where the rig's platform file reports a mount (form: FileSystemId, AccessPointId).
EFS_MOUNT_PATH = "/rig/efs-mount"


@dataclass
class Aws:
    """Endpoints and clients of the rig's AWS: `environment` is what a node's aws CLI needs. `groups` maps an
    Auto Scaling group to its launch template version and `group_tags` to its tags; `calls` lists the
    stand-in's calls, in order; `node_calls` every request a node made, with the stack state (`stack`, set
    by the rig whenever it writes a node's files) whose policies were in force then."""

    moto_url: str
    standin_url: str
    clusters: dict[str, list[tuple[str, int]]]
    groups: dict[str, str] = field(default_factory=dict)
    group_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[dict[str, str]] = field(default_factory=list)
    stack: StackState | None = None
    node_calls: list[tuple[StackState | None, NodeCall]] = field(default_factory=list)
    # Each PutMetricData request a node made: {Namespace, MetricData}.
    metric_data: list[dict] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.standin_url}

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


def signing_scope(authorization: str) -> tuple[str, str]:
    """(service, region) from a SigV4 Authorization header's credential scope (key/date/region/service/...)."""
    match = re.search(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/aws4_request", authorization)
    return (match.group(2), match.group(1)) if match else ("", REGION)


def arn(service: str, region: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"


def query_call(aws: Aws, service: str, region: str, form: dict[str, str]) -> NodeCall:
    """A Query-protocol request (Auto Scaling, ElastiCache, CloudFormation) as IAM sees it. A group's tags
    are what `autoscaling:ResourceTag/...` conditions read (Service Authorization Reference, Auto Scaling)."""
    action, context = f"{service}:{form.get('Action', '')}", {}
    resource = "*"
    if "AutoScalingGroupName" in form:
        name = form["AutoScalingGroupName"]
        resource = arn("autoscaling", region, f"autoScalingGroup:{GROUP_ID}:autoScalingGroupName/{name}")
        context = {f"autoscaling:ResourceTag/{k}": v for k, v in aws.group_tags.get(name, {}).items()}
    elif "CacheClusterId" in form:
        resource = arn("elasticache", region, f"cluster:{form['CacheClusterId']}")
    elif "StackName" in form:
        names = aws.stack.names if aws.stack else {}
        stack_id = names.get("AWS::StackId", "")
        known = form["StackName"] in (names.get("AWS::StackName"), stack_id)
        resource = stack_id if known else arn("cloudformation", region, f"stack/{form['StackName']}/unknown")
    return NodeCall(action, resource, context)


def json_call(aws: Aws, service: str, region: str, target: str, body: dict) -> NodeCall:
    """A JSON-protocol request (Secrets Manager, SSM) as IAM sees it: a secret by its full ARN (with the
    random suffix: a name is resolved as Secrets Manager does), a parameter by its ARN."""
    action = f"{service}:{target.rsplit('.', 1)[-1]}"
    if "SecretId" in body:
        secret = body["SecretId"]
        if not secret.startswith("arn:"):
            try:
                secret = aws.client("secretsmanager").describe_secret(SecretId=secret)["ARN"]
            except Exception:  # no such secret: IAM sees the name it was asked for
                secret = arn("secretsmanager", region, f"secret:{secret}")
        return NodeCall(action, secret)
    if "Name" in body and service == "ssm":
        name = body["Name"] if body["Name"].startswith("/") else f"/{body['Name']}"
        return NodeCall(action, arn("ssm", region, f"parameter{name}"))
    return NodeCall(action, "*")


def put_metric_data(aws: Aws, body: dict) -> tuple[int, str]:
    """A JSON-protocol PutMetricData (X-Amz-Target GraniteServiceVersion20100801.PutMetricData), stored in moto
    through its Query protocol; the JSON answer the CLI expects (an empty object)."""
    aws.metric_data.append(body)
    aws.client("cloudwatch").put_metric_data(Namespace=body["Namespace"], MetricData=body["MetricData"])
    return 200, "{}"


def s3_call(method: str, path: str) -> NodeCall:
    """A path-style S3 request as IAM sees it (HeadObject is authorized as s3:GetObject)."""
    bucket, _, key = unquote(urlsplit(path).path).lstrip("/").partition("/")
    if not key:
        return NodeCall("s3:ListBucket", f"arn:aws:s3:::{bucket}")
    action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject"}.get(
        method, f"s3:{method}"
    )
    return NodeCall(action, f"arn:aws:s3:::{bucket}/{key}")


def mount_call(form: dict[str, str], action: str) -> NodeCall:
    """An EFS mount through an access point (efs-utils' `iam,tls` options on AL2023, platform-al2023.sh):
    ClientMount, and ClientWrite for a read-write mount, on the file system, with the access point's ARN, TLS
    and the mount target as the request's keys (Amazon EFS User Guide, "Using IAM to control access")."""
    context = {
        "elasticfilesystem:AccessPointArn": arn(
            "elasticfilesystem", REGION, f"access-point/{form['AccessPointId']}"
        ),
        "elasticfilesystem:AccessedViaMountTarget": "true",
        "aws:SecureTransport": "true",
    }
    return NodeCall(action, arn("elasticfilesystem", REGION, f"file-system/{form['FileSystemId']}"), context)


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

    def record(call: NodeCall, region: str, origin: str) -> None:
        # The node's CLI reaches every real endpoint over HTTPS; only the rig's loopback is plain HTTP.
        context = {"aws:RequestedRegion": region, "aws:SecureTransport": "true", **call.context}
        aws.node_calls.append((aws.stack, NodeCall(call.action, call.resource, context, origin)))

    def forward(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(host, port, timeout=300)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(
            handler.command, handler.path, body=body or None, headers={**headers, "Host": f"{host}:{port}"}
        )
        response = connection.getresponse()
        # A HEAD answer keeps its Content-Length (the object's size, which `aws s3 cp` reads).
        skip = ("transfer-encoding", "connection") + (
            () if handler.command == "HEAD" else ("content-length",)
        )
        return (
            response.status,
            [(k, v) for k, v in response.getheaders() if k.lower() not in skip],
            response.read(),
        )

    class StandIn(BaseHTTPRequestHandler):
        def any_method(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            service, region = signing_scope(self.headers.get("Authorization", ""))
            text = body.decode(errors="replace")
            if self.path.startswith(EFS_MOUNT_PATH):
                form = {key: values[0] for key, values in parse_qs(text).items()}
                for action in ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"):
                    record(mount_call(form, action), REGION, "platform_mount_shared")
                status, headers, reply = 200, [("Content-Type", "text/plain")], b""
            elif service in STANDIN_SERVICES:
                form = {key: values[0] for key, values in parse_qs(text).items()}
                aws.calls.append(form)
                record(query_call(aws, service, region, form), region, f"aws {service}")
                status, answered = answer(form)
                headers, reply = [("Content-Type", "text/xml")], answered.encode()
            elif service == "monitoring" and self.headers.get("X-Amz-Target", "").endswith(".PutMetricData"):
                # CloudWatch signs as "monitoring"; IAM knows it as "cloudwatch", with the namespace as a key.
                body = json.loads(text or "{}")
                context = {"cloudwatch:namespace": body.get("Namespace", "")}
                record(NodeCall("cloudwatch:PutMetricData", "*", context), region, "aws cloudwatch")
                status, answered = put_metric_data(aws, body)
                headers, reply = [("Content-Type", "application/x-amz-json-1.0")], answered.encode()
            else:
                target = self.headers.get("X-Amz-Target", "")
                if service == "s3":
                    record(s3_call(self.command, self.path), region, "aws s3")
                elif target:
                    record(
                        json_call(aws, service, region, target, json.loads(text or "{}")),
                        region,
                        f"aws {service}",
                    )
                else:
                    record(NodeCall(f"{service}:{self.command} {self.path}", "*"), region, "unknown request")
                status, headers, reply = forward(self, body)
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            if not any(key.lower() == "content-length" for key, _ in headers):
                self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = any_method

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
