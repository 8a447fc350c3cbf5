"""The TLS listener at the process level (contract §1.3): served on ``QUEUE_SERVING_TLS_PORT`` with
the same handler as the plain port, only when a certificate and key exist at startup.

Upstream reads them from /var/lib/knative/certs only; ours from ``KDP_CERT_DIR`` (same default),
which is what lets this test run."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.queueproxy.harness import (  # noqa: F401 (fixtures)
    HEALTH_HEADERS,
    Client,
    FakeBackend,
    QueueProxies,
    _backend_server,
    app,
    build_request,
    kdp_only,
    qps,
)

pytestmark = [pytest.mark.functional, pytest.mark.asyncio(loop_scope="module"),
              kdp_only("upstream reads its certificate only from /var/lib/knative/certs")]


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throwaway certificate")
    d = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt"), "-days", "1", "-subj", "/CN=kn-user-ns"],
        check=True, capture_output=True, timeout=30)
    return d


async def tls_client(port: int) -> Client:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(5):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    return Client(r, w, 5.0)


async def test_the_tls_port_serves_the_same_handler_when_certificates_exist(
        app: FakeBackend, qps: QueueProxies, cert_dir: Path) -> None:
    qp = await qps.fresh(app.port, KDP_CERT_DIR=str(cert_dir))
    tls_port = int(qp.env["QUEUE_SERVING_TLS_PORT"])
    async with await tls_client(tls_port) as c:
        resp = await c.request("GET", "/over-tls", [("K-Original-Host", "secure.example")])
        assert resp.status == 200
        assert (await c.request("GET", "/", HEALTH_HEADERS)).body == b"queue"
        assert c.writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert app.requests[-1].target == "/over-tls" and app.requests[-1].header("host") == "secure.example"


async def test_no_tls_port_without_certificates(app: FakeBackend, qps: QueueProxies, tmp_path: Path) -> None:
    qp = await qps.fresh(app.port, KDP_CERT_DIR=str(tmp_path))
    with pytest.raises(OSError):
        await tls_client(int(qp.env["QUEUE_SERVING_TLS_PORT"]))
