"""moto's standalone S3 server, as a subprocess on a free loopback port, for the s3:// tests.

With ``auth=True`` the server checks signatures against IAM access keys (moto's
``INITIAL_NO_AUTH_ACTION_COUNT``): the fixture spends the unauthenticated actions on creating one
IAM user with an access key and a policy, so from then on wrong or missing keys are refused as a
real S3 endpoint refuses them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["S3Server", "s3_server"]

REGION = "us-east-1"
# CreateUser, CreateAccessKey, PutUserPolicy: the actions run before authentication starts
SETUP_ACTIONS = 3


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    def client(self, **kwargs: Any) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=kwargs.get("key", self.access_key),
                            aws_secret_access_key=kwargs.get("secret", self.secret_key))

    def secret(self, directory: Path, **overrides: str) -> Path:
        """Write a credentials Secret's keys as the kubelet mounts them (one file per key)."""
        values = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                  "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, **overrides}
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in values.items():
            (directory / key).write_text(value)
        return directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def s3_server(log_dir: Path, *, auth: bool = True) -> Iterator[S3Server]:
    port = _free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "MOTO_PORT": str(port)}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    log = log_dir / f"moto-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        key, secret = "AKIAEXAMPLE000000000", "not-used-when-auth-is-off"
        if auth:
            import boto3

            iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                               aws_access_key_id="setup", aws_secret_access_key="setup")
            iam.create_user(UserName="models")
            created = iam.create_access_key(UserName="models")["AccessKey"]
            key, secret = created["AccessKeyId"], created["SecretAccessKey"]
            iam.put_user_policy(UserName="models", PolicyName="all", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        yield S3Server(endpoint, key, secret, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
