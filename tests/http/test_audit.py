"""Every export and admin call leaves one audit line: who, what, from where, and the outcome; no
line anywhere holds a token; the access counter counts the decisions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.ops.logs import JsonFormatter
from tests.http.access import HOLDERS, TOKENS, WRONG_TOKEN, bearer, one_token_per_scope, settings
from tests.server import serve
from tests.serving.onnx_models import infer_body, write_version

SECRETS = [*TOKENS.values(), WRONG_TOKEN]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repository"
    write_version(root, "m", 1)
    return root


def _audit(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "service.audit"]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return document


def test_export_and_admin_calls_are_audited_and_nothing_else(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings(repository, ["infer", "inspect"], one_token_per_scope()))) as client:
        tensor = client.get("/v2/models/m/weights").json()["tensors"][0]["id"]
        values = f"/v2/models/m/versions/1/weights/{tensor}/values"
        caplog.clear()
        # not audited: infer and inspect calls, the index included
        assert client.post("/v2/models/m/infer", json=infer_body()).status_code == 200
        assert client.get(f"/v2/models/m/weights/{tensor}").status_code == 200
        assert client.post("/v2/repository/index", json={}).status_code == 200
        assert _audit(caplog) == []

        calls = [
            ("GET", values, {}, 401, None, "none"),
            ("GET", values, bearer(WRONG_TOKEN), 401, None, "unknown"),
            ("GET", values, bearer(TOKENS["inspect"]), 403, HOLDERS["inspect"], "token"),
            ("GET", values, bearer(TOKENS["export"]), 200, HOLDERS["export"], "token"),
            ("GET", "/v2/models/m/versions/1/weights/Tnope/values", bearer(TOKENS["export"]), 404, HOLDERS["export"], "token"),
            ("POST", "/v2/repository/models/m/unload", {}, 401, None, "none"),
            ("POST", "/v2/repository/models/m/unload", bearer(TOKENS["admin"]), 200, HOLDERS["admin"], "token"),
            ("POST", "/v2/repository/models/m/load", bearer(TOKENS["admin"]), 200, HOLDERS["admin"], "token"),
        ]
        for method, path, headers, status, _, _ in calls:
            response = client.request(method, path, headers={**headers, "X-Forwarded-For": "203.0.113.9"})
            assert response.status_code == status, (method, path, response.text)
        metrics = client.get("/metrics").text

    records = _audit(caplog)
    assert len(records) == len(calls)
    for record, (method, path, _, status, holder, credentials) in zip(records, calls, strict=True):
        line = _fields(record)
        export = path.endswith("/values")
        expected = {
            "level": "info",
            "logger": "service.audit",
            "audit": "export" if export else "admin",
            "credentials": credentials,
            "method": method,
            "path": path,
            "model": "m",
            "client": "testclient",
            "forwarded_for": "203.0.113.9",
            "status": status,
        }
        if holder is not None:
            expected["token_name"] = holder
        if export:
            expected |= {"version": "1", "tensor": path.split("/")[-2]}
        assert {key: line.get(key) for key in expected} == expected
        assert set(line) - set(expected) == {"time", "message", "request_id", "duration_ms"}
        assert line["request_id"]
        who = f"token '{holder}'" if holder else "no token" if credentials == "none" else "an unknown token"
        assert f" by {who} from testclient: {status}" in line["message"]

    counted = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line.startswith("weightserve_access_total{")
    }
    assert counted['weightserve_access_total{outcome="unauthorized",scope="export"}'] == 2
    assert counted['weightserve_access_total{outcome="forbidden",scope="export"}'] == 1
    assert counted['weightserve_access_total{outcome="granted",scope="export"}'] == 2
    assert counted['weightserve_access_total{outcome="unauthorized",scope="admin"}'] == 1
    assert counted['weightserve_access_total{outcome="granted",scope="admin"}'] == 2
    # open scopes make no decision, so they count nothing
    assert counted['weightserve_access_total{outcome="granted",scope="infer"}'] == 0

    written = "\n".join(_fields(record)["message"] + json.dumps(_fields(record)) for record in caplog.records)
    assert [secret for secret in SECRETS if secret in written] == []


def test_closed_infer_counts_every_decision_on_the_direct_path(repository: Path) -> None:
    with TestClient(create_app(settings(repository, [], one_token_per_scope()))) as client:
        assert client.post("/v2/models/m/infer", json=infer_body(), headers=bearer(TOKENS["infer"])).status_code == 200
        assert client.post("/v2/models/m/infer", json=infer_body()).status_code == 401
        assert client.post("/v2/models/m/infer", json=infer_body(), headers=bearer(TOKENS["export"])).status_code == 403
        metrics = client.get("/metrics", headers=bearer(TOKENS["infer"])).text
    for outcome, count in (("granted", 2.0), ("unauthorized", 1.0), ("forbidden", 1.0)):  # + the scrape itself
        assert f'weightserve_access_total{{outcome="{outcome}",scope="infer"}} {count}' in metrics


def test_a_real_server_writes_audit_lines_even_at_log_level_warning(repository: Path, tmp_path: Path) -> None:
    env = {
        "WEIGHTSERVE_LOG_LEVEL": "warning",
        "WEIGHTSERVE_AUTH_TOKENS": json.dumps(
            [{"name": "release-bot", "token": TOKENS["export"], "scopes": ["export"]}]
        ),
    }
    with serve(repository, tmp_path, env=env) as server, httpx.Client(base_url=server.base_url) as client:
        tensor = client.get("/v2/models/m/weights").json()["tensors"][0]["id"]
        path = f"/v2/models/m/weights/{tensor}/values"
        assert client.get(path, headers=bearer(TOKENS["export"])).status_code == 200
        assert client.get(path, headers=bearer(WRONG_TOKEN)).status_code == 401
        assert client.post("/v2/repository/models/m/load").status_code == 403
        server_log = server.log()
    lines = [json.loads(line) for line in server_log.splitlines() if line.startswith("{")]
    audit = [line for line in lines if line["logger"] == "service.audit"]
    assert [(line["audit"], line.get("token_name"), line["credentials"], line["status"]) for line in audit] == [
        ("export", "release-bot", "token", 200),
        ("export", None, "unknown", 401),
        ("admin", None, "none", 403),
    ]
    assert {line["client"] for line in audit} == {"127.0.0.1"}
    assert audit[0]["tensor"] == tensor
    assert all(line["level"] == "info" for line in audit)
    assert [line for line in lines if line["level"] == "info" and line["logger"] != "service.audit"] == []
    assert [secret for secret in SECRETS if secret in server_log] == []
