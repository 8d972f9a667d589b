"""The AWS APIs a web node calls, on loopback: a moto server for Secrets Manager and S3, and a stand-in for
ElastiCache's DescribeCacheClusters (moto keeps no cache node endpoints), answering the same call with the
response shape of the API reference (DescribeCacheClusters, ShowCacheNodeInfo=true)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass
class Aws:
    """Endpoints and clients of the rig's AWS: `environment` is what a node's aws CLI needs."""

    moto_url: str
    elasticache_url: str
    clusters: dict[str, list[tuple[str, int]]]

    @property
    def environment(self) -> dict[str, str]:
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_ELASTICACHE": self.elasticache_url,
        }

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
    """A moto server and the ElastiCache stand-in, both on 127.0.0.1, for the duration."""
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    clusters: dict[str, list[tuple[str, int]]] = {}

    class ElastiCache(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            cluster_id = form.get("CacheClusterId", [""])[0]
            if form.get("Action") != ["DescribeCacheClusters"] or cluster_id not in clusters:
                self.send_response(404 if cluster_id else 400)
                body = (
                    "<ErrorResponse><Error><Type>Sender</Type><Code>CacheClusterNotFound</Code>"
                    f"<Message>CacheCluster {escape(cluster_id)} not found.</Message></Error></ErrorResponse>"
                ).encode()
            else:
                self.send_response(200)
                body = describe_cache_clusters_xml(cluster_id, clusters[cluster_id]).encode()
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), ElastiCache)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Aws(f"http://{host}:{port}", f"http://127.0.0.1:{server.server_address[1]}", clusters)
    finally:
        server.shutdown()
        moto.stop()
