"""The status table and the one-line summary; the JSON log file."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from kdp.logsink import LogFile
from kdp.view import render, summary_line

STATUS = {
    "ingress": "http://127.0.0.1:8080", "domain": "example.com",
    "processes": {"activator": "running", "autoscaler": "running (1 restarts)"},
    "autoscaler": {"connected": True},
    "services": [{
        "namespace": "default", "name": "hello",
        "routes": [{"host": "hello", "traffic": [{"revision": "hello-00002", "percent": 100}]}],
        "revisions": [
            {"name": "hello-00002", "traffic": 100, "ready": 2, "desired": 3, "pending": 1, "terminating": 0,
             "restarts": 0, "failure": "",
             "autoscaler": {"mode": "serve", "in_panic": True, "stable_concurrency": 3.1, "rps": 41.04}},
            {"name": "hello-00001", "traffic": 0, "ready": 0, "desired": 0, "pending": 0, "terminating": 0,
             "restarts": 4, "failure": "CrashLoopBackOff: user-container exited with code 1", "autoscaler": None},
        ],
    }],
    "messages": ["12:00:00 something happened"],
}


def test_the_table_has_a_row_per_revision_with_pods_mode_panic_concurrency_and_rps() -> None:
    text = render(STATUS)
    lines = text.splitlines()
    assert "kdp up: ingress http://127.0.0.1:8080, domain example.com" in lines[0]
    assert "autoscaler running (1 restarts)" in lines[1] and "autoscaler link up" in lines[1]
    assert "curl -H 'Host: hello.default.example.com' http://127.0.0.1:8080/" in text
    header = next(ln for ln in lines if ln.startswith("SERVICE"))
    assert header.split() == ["SERVICE", "REVISION", "TRAFFIC", "PODS", "MODE", "PANIC", "CONC", "RPS", "STATUS"]
    row2 = next(ln for ln in lines if "hello-00002" in ln and "%" in ln)
    assert row2.split() == ["default/hello", "hello-00002", "100%", "2/3", "serve", "yes", "3.10", "41.0", "1",
                            "starting"]
    row1 = next(ln for ln in lines if "hello-00001" in ln)
    assert row1.split()[:7] == ["hello-00001", "0%", "0/0", "-", "-", "-", "-"]
    assert "CrashLoopBackOff" in row1
    assert lines[-1] == "12:00:00 something happened"


def test_the_summary_line_names_each_revision() -> None:
    assert summary_line(STATUS) == ("hello-00002 100% 2/3 serve c=3.10 rps=41.0 panic [1 starting]; "
                                    "hello-00001 0% 0/0 - c=- rps=- [CrashLoopBackOff: user-container exited with "
                                    "code 1]")
    assert summary_line({"services": []}) == "(no services)"


def test_the_log_file_holds_kdps_records_and_childrens_lines_as_json(tmp_path: Path) -> None:
    path = tmp_path / "kdp.log"
    log = LogFile(str(path))
    logger = logging.getLogger("kdp.test_view")
    handler = log.handler()
    logger.addHandler(handler)
    try:
        logger.warning("pod %s crashed", "p1")
        log.child_line("p1/user-container", "stderr", "Traceback: boom")
        log.child_line("p1/queue-proxy", "stderr", '{"severity":"INFO","message":"serving"}')
    finally:
        logger.removeHandler(handler)
        log.close()
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert docs[0]["level"] == "warning" and docs[0]["msg"] == "pod p1 crashed" and docs[0]["logger"] == "kdp.test_view"
    assert docs[1]["source"] == "p1/user-container" and docs[1]["msg"] == "Traceback: boom"
    assert docs[1]["level"] == "error" and docs[1]["stream"] == "stderr"
    assert docs[2] == {"severity": "INFO", "message": "serving", "source": "p1/queue-proxy", "stream": "stderr"}
