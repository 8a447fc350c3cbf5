"""The committed generated code must be what protoc makes of the committed .proto files."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ["proto/stat.proto", "proto/kdp.proto"]
GENERATED = ["stat_pb2.py", "stat_pb2.pyi", "kdp_pb2.py", "kdp_pb2.pyi", "kdp_pb2_grpc.py"]


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    (tmp_path / "proto").mkdir()
    for p in PROTOS:
        shutil.copy(ROOT / p, tmp_path / p)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.",
         "--grpc_python_out=.", *PROTOS],
        cwd=tmp_path, check=True,
    )
    stale = [g for g in GENERATED
             if (tmp_path / "proto" / g).read_bytes() != (ROOT / "proto" / g).read_bytes()]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_stat_keeps_upstream_field_numbers() -> None:
    from proto import stat_pb2

    fields = {f.name: (f.number, f.type) for f in stat_pb2.Stat.DESCRIPTOR.fields}
    F = stat_pb2.Stat.DESCRIPTOR.fields_by_name["pod_name"]
    assert fields == {
        "pod_name": (1, F.TYPE_STRING),
        "average_concurrent_requests": (2, F.TYPE_DOUBLE),
        "average_proxied_concurrent_requests": (3, F.TYPE_DOUBLE),
        "request_count": (4, F.TYPE_DOUBLE),
        "proxied_request_count": (5, F.TYPE_DOUBLE),
        "process_uptime": (6, F.TYPE_DOUBLE),
        "timestamp": (7, F.TYPE_INT64),
    }
    wire = {f.name: f.number for f in stat_pb2.WireStatMessage.DESCRIPTOR.fields}
    assert wire == {"namespace": 1, "name": 2, "stat": 3}
    assert stat_pb2.WireStatMessages.DESCRIPTOR.fields_by_name["messages"].number == 1


def test_stat_wire_bytes_match_a_hand_encoding() -> None:
    # pod_name "p" (field 1, len 1), average_concurrent_requests 1.0 (field 2, fixed64).
    from proto import stat_pb2

    raw = stat_pb2.Stat(pod_name="p", average_concurrent_requests=1.0).SerializeToString()
    assert raw == b"\x0a\x01p\x11" + bytes.fromhex("000000000000f03f")
