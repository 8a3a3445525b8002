"""The HTTP API against the real server: every endpoint, the auth matrix, bad input, jobs and docs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from sidecar.api.app import Sidecar, create_app, openapi_document, require_admin_token
from sidecar.api.validation import MAX_BODY_BYTES
from sidecar.config import ConfigError, Settings
from sidecar.jobs import Job, JobLock
from sidecar.logs import setup_logging, teardown_logging

ADMIN = "admin-token-for-tests-0123456789"
READ = "read-token-for-tests-0123456789"
WRONG = "wrong-token-for-tests-012345678"
TOKENS = {"none": None, "wrong": WRONG, "read": READ, "admin": ADMIN}


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], sample_counts: dict[str, int]) -> Settings:
    return make_settings(admin_token=ADMIN, read_token=READ, verify_after_backup="off")


@pytest.fixture
async def sidecar_app(api_settings: Settings) -> AsyncIterator[Sidecar]:
    stream = io.StringIO()
    tail = setup_logging(api_settings, stream=stream)
    sidecar = Sidecar(api_settings, log_tail=tail)
    sidecar.stdout = stream  # type: ignore[attr-defined]
    try:
        yield sidecar
    finally:
        teardown_logging()


@pytest.fixture
async def client(aiohttp_client: Any, sidecar_app: Sidecar) -> TestClient:
    return await aiohttp_client(create_app(sidecar_app))


async def wait_job(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/api/backup/jobs/{job_id}", headers=auth(READ))
        assert resp.status == 200
        job = (await resp.json())["job"]
        if job["state"] in ("succeeded", "failed"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.1)


async def backup(client: TestClient) -> dict[str, Any]:
    resp = await client.post("/api/backup/create?wait=true", headers=auth(ADMIN))
    assert resp.status == 200, await resp.text()
    return await resp.json()


def assert_error(body: dict[str, Any], code: str, *words: str) -> None:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    for word in words:
        assert word in body["error"]["message"], body


# -- the auth matrix ----------------------------------------------------------------------------

READ_ROUTES = [
    ("GET", "/api/backup/status"),
    ("GET", "/api/backup/list"),
    ("GET", "/api/backup/jobs/000000000000"),
    ("GET", "/api/backup/pitr"),
    ("GET", "/api/backup/oplog"),
    ("GET", "/api/v1/monitoring/status"),
    ("GET", "/api/v1/monitoring/metrics"),
    ("GET", "/api/v1/monitoring/logs"),
    ("GET", "/api/v1/monitoring/alerts"),
]
# Admin routes get bodies that pass auth but stop at validation or the catalog: nothing runs.
ADMIN_ROUTES = [
    ("POST", "/api/backup/create?wait=maybe"),
    ("POST", "/api/backup/test?wait=maybe"),
    ("POST", "/api/backup/restore?wait=maybe"),
]
OPEN_ROUTES = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/api-docs"),
    ("GET", "/api-docs/openapi.json"),
]


@pytest.mark.parametrize("who", list(TOKENS))
@pytest.mark.parametrize(("method", "path"), READ_ROUTES + ADMIN_ROUTES + OPEN_ROUTES)
async def test_auth_matrix(client: TestClient, method: str, path: str, who: str) -> None:
    resp = await client.request(method, path, headers=auth(TOKENS[who]))
    route = (method, path)
    if route in OPEN_ROUTES:
        expected = {200}
    elif who in ("none", "wrong"):
        expected = {401}
    elif who == "read" and route in ADMIN_ROUTES:
        expected = {403}
    elif route in ADMIN_ROUTES:
        expected = {400}  # past auth, stopped by ?wait=maybe
    else:
        expected = {404} if "jobs" in path else {200}
    assert resp.status in expected, (route, who, resp.status, await resp.text())
    if resp.status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert_error(await resp.json(), "unauthorized" if who == "none" else "invalid_token")
    if resp.status == 403:
        assert_error(await resp.json(), "forbidden", "admin token")
    if resp.status >= 400:
        assert resp.content_type == "application/json"
    body = await resp.text()
    assert ADMIN not in body and READ not in body and WRONG not in body


@pytest.mark.parametrize(
    "header",
    ["Basic YWRtaW46cGFzcw==", "Bearer", "Bearer ", f"Token {ADMIN}", ADMIN, f"Bearer {ADMIN[:-1]}"],
)
async def test_malformed_authorization_is_401(client: TestClient, header: str) -> None:
    resp = await client.get("/api/backup/status", headers={"Authorization": header})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] in ("unauthorized", "invalid_token")


@pytest.mark.parametrize("token", [ADMIN + "x", READ + "x", ADMIN + READ])
@pytest.mark.parametrize(("method", "path"), [READ_ROUTES[0], ADMIN_ROUTES[0]])
async def test_a_token_with_characters_appended_is_401(
    client: TestClient, method: str, path: str, token: str
) -> None:
    """A valid token is the whole credential: one that merely starts with it is not valid."""
    resp = await client.request(method, path, headers=auth(token))
    assert resp.status == 401, await resp.text()
    assert_error(await resp.json(), "invalid_token")


async def test_admin_token_also_reads(client: TestClient) -> None:
    resp = await client.get("/api/backup/list", headers=auth(ADMIN))
    assert resp.status == 200


async def test_metrics_behind_read_token_when_configured(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(admin_token=ADMIN, read_token=READ, metrics_require_token="true")
    client = await aiohttp_client(create_app(Sidecar(settings)))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=auth(WRONG))).status == 401
    assert (await client.get("/metrics", headers=auth(READ))).status == 200
    assert (await client.get("/health")).status == 200  # /health stays open


def test_serve_refuses_without_admin_token(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="SIDECAR_ADMIN_TOKEN"):
        require_admin_token(make_settings())
    with pytest.raises(ConfigError, match="SIDECAR_ADMIN_TOKEN: must be at least 16"):
        make_settings(admin_token="short")


# -- backups through the API --------------------------------------------------------------------


async def test_create_wait_returns_the_backup(client: TestClient, sidecar_app: Sidecar) -> None:
    body = await backup(client)
    entry, job = body["backup"], body["job"]
    assert entry["status"] == "completed" and entry["fileName"].startswith("maekcord-backup-")
    assert entry["fileName"].endswith(".gz") and entry["fileSize"].endswith("B")
    assert job["state"] == "succeeded" and job["kind"] == "backup" and job["trigger"] == "manual"
    assert job["result"]["fileName"] == entry["fileName"]
    progress = job["progress"]
    assert progress["namespacesDone"] == progress["namespacesTotal"] > 0
    assert progress["documents"] > 0 and progress["bytes"] > 0
    assert (sidecar_app.settings.backup_dir / entry["fileName"]).is_file()

    listing = await (await client.get("/api/backup/list", headers=auth(READ))).json()
    assert listing["count"] == 1 and listing["backups"][0]["fileName"] == entry["fileName"]
    status = await (await client.get("/api/backup/status", headers=auth(READ))).json()
    assert status["status"] == "idle" and status["currentJob"] is None
    assert status["lastSuccessfulBackup"]["fileName"] == entry["fileName"]
    assert status["backups"] == {
        "total": 1,
        "completed": 1,
        "failed": 0,
        "totalSizeBytes": entry["sizeBytes"],
    }
    assert status["schedule"] == {"cron": "0 2 * * *", "timezone": "Asia/Seoul"}
    assert status["nextBackupAt"].endswith("Z")

    metrics = await (await client.get("/metrics")).text()
    assert 'mongobackup_backup_successes_total{trigger="manual"} 1.0' in metrics
    summary = await (await client.get("/api/v1/monitoring/metrics", headers=auth(READ))).json()
    assert summary["backup"]["lastSuccessAt"] > 0


async def test_create_answers_202_with_location_then_poll(client: TestClient) -> None:
    resp = await client.post("/api/backup/create", headers=auth(ADMIN))
    assert resp.status == 202
    job = (await resp.json())["job"]
    assert resp.headers["Location"] == f"/api/backup/jobs/{job['id']}"
    assert job["state"] in ("running", "succeeded")
    done = await wait_job(client, job["id"])
    assert done["state"] == "succeeded" and done["result"]["fileName"]
    listing = await (await client.get("/api/backup/list?status=completed&limit=5", headers=auth(READ))).json()
    assert [b["fileName"] for b in listing["backups"]] == [done["result"]["fileName"]]


async def test_second_job_while_one_runs_is_409_with_its_id(client: TestClient, sidecar_app: Sidecar) -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(job: Job) -> None:
        job.state = "running"
        sidecar_app.runner.job_started(job)  # what the service tells its listeners once it holds the lock
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)
        job.state = "succeeded"

    running, task = await sidecar_app.runner.submit("backup", "manual", slow)
    try:
        resp = await client.post("/api/backup/create", headers=auth(ADMIN))
        assert resp.status == 409
        body = await resp.json()
        assert body["error"]["code"] == "job_running" and body["error"]["runningJobId"] == running.id
        assert running.id in body["error"]["message"]
        status = await (await client.get("/api/backup/status", headers=auth(READ))).json()
        assert status["status"] == "running" and status["currentJob"]["id"] == running.id
        health = await (await client.get("/health")).json()
        assert health["job"]["id"] == running.id
    finally:
        release.set()
        await task
    assert (await client.post("/api/backup/create?wait=true", headers=auth(ADMIN))).status == 200


async def test_lock_held_by_another_process_is_409(client: TestClient, sidecar_app: Sidecar) -> None:
    other = Job(kind="restore", trigger="manual", started_at="2024-12-01T02:00:00.000Z")
    lock = JobLock(sidecar_app.settings.backup_dir)  # a second open file: flock conflicts like a process
    lock.acquire(other)
    try:
        resp = await client.post("/api/backup/create?wait=true", headers=auth(ADMIN))
        assert resp.status == 409
        body = await resp.json()
        assert body["error"]["runningJobId"] == other.id and body["error"]["runningJobKind"] == "restore"
    finally:
        lock.release()
    assert not [j for j in sidecar_app.service.jobs.values() if j.state == "queued"]


async def test_backup_failure_is_a_json_error_not_a_traceback(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        admin_token=ADMIN,
        mongodb_uri="mongodb://127.0.0.1:1/?directConnection=true",
        connect_timeout_seconds="0.5",
    )
    client = await aiohttp_client(create_app(Sidecar(settings)))
    resp = await client.post("/api/backup/create?wait=true", headers=auth(ADMIN))
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["code"] == "mongodb_unavailable" and "127.0.0.1:1" in body["error"]["message"]
    assert body["error"]["job"]["state"] == "failed" and "Traceback" not in json.dumps(body)
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded" and health["mongodb"]["up"] is False


async def test_get_unknown_job_is_404(client: TestClient) -> None:
    resp = await client.get("/api/backup/jobs/nope", headers=auth(READ))
    assert resp.status == 404
    assert_error(await resp.json(), "job_not_found", "nope")


# -- bad input ----------------------------------------------------------------------------------

BAD_INPUT = [
    ("/api/backup/restore", b'{"fileName": ', "malformed_json", "not valid JSON"),
    ("/api/backup/restore", b"\xff\xfe", "malformed_json", "UTF-8"),
    ("/api/backup/restore", b'["a.gz"]', "invalid_body", "JSON object"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "force": true}', "unknown_field", "force"),
    ("/api/backup/create", b'{"anything": 1}', "unknown_field", "anything"),
    ("/api/backup/test", b'{"levle": "full"}', "unknown_field", "levle"),
    ("/api/backup/restore", b"{}", "missing_field", "fileName"),
    ("/api/backup/restore", b'{"fileName": 5}', "invalid_field", "fileName"),
    ("/api/backup/restore", b'{"fileName": null}', "invalid_field", "fileName"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "drop": "yes"}', "invalid_field", "drop"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "dryRun": 1}', "invalid_field", "dryRun"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "nsInclude": 5}', "invalid_field", "nsInclude"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "nsInclude": ["ok.x", 3]}', "invalid_field", "nsInclude"),
    (
        "/api/backup/restore",
        b'{"fileName": "a.gz", "nsExclude": "no dots here "}',
        "invalid_field",
        "nsExclude",
    ),
    ("/api/backup/restore", b'{"fileName": "a.gz", "nsFrom": "a.*"}', "invalid_field", "nsFrom and nsTo"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "engine": "pg_restore"}', "invalid_field", "engine"),
    ("/api/backup/restore", b'{"fileName": "a.gz", "oplogReplay": "no"}', "invalid_field", "oplogReplay"),
    ("/api/backup/test", b'{"level": "deep"}', "invalid_field", "level"),
    ("/api/backup/test", b'{"level": 3}', "invalid_field", "level"),
    ("/api/backup/restore", b'{"fileName": "../backup-info.json"}', "invalid_file_name", "not a path"),
    ("/api/backup/restore", b'{"fileName": "/etc/passwd"}', "invalid_file_name", "not a path"),
    ("/api/backup/restore", b'{"fileName": "a\\\\b.gz"}', "invalid_file_name", "not a path"),
    ("/api/backup/restore", b'{"fileName": "..gz"}', "invalid_file_name", ".."),
    ("/api/backup/test", b'{"fileName": "x/../y.gz"}', "invalid_file_name", "fileName"),
    ("/api/backup/restore", b'{"fileName": ""}', "invalid_file_name", "empty"),
    (
        "/api/backup/restore",
        b'{"fileName": "a.gz", "pointInTime": "1:2"}',
        "invalid_field",
        "not fileName and",
    ),
    ("/api/backup/restore", b'{"pointInTime": "1:2", "beforeOp": "1:3"}', "invalid_field", "pointInTime and"),
    ("/api/backup/restore", b'{"pointInTime": "yesterday"}', "invalid_field", "ISO-8601"),
    ("/api/backup/restore", b'{"pointInTime": "2024-12-01T14:31:06"}', "invalid_field", "no time zone"),
    ("/api/backup/restore", b'{"beforeOp": "2024-12-01T14:31:06Z"}', "invalid_field", "oplog position"),
    ("/api/backup/restore", b'{"beforeOp": "99999999999:1"}', "invalid_field", "beforeOp"),
    ("/api/backup/restore", b'{"pointInTime": 5}', "invalid_field", "pointInTime"),
]


@pytest.mark.parametrize(("path", "body", "code", "named"), BAD_INPUT)
async def test_bad_input_is_a_4xx_naming_the_problem(
    client: TestClient, path: str, body: bytes, code: str, named: str
) -> None:
    resp = await client.post(path, data=body, headers={**auth(ADMIN), "Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert_error(await resp.json(), code, named)


async def test_file_name_not_in_catalog_is_404(client: TestClient) -> None:
    name = "maekcord-backup-2024-12-01T02-00-00.gz"
    for path, body in (("/api/backup/restore", {"fileName": name}), ("/api/backup/test", {"fileName": name})):
        resp = await client.post(path, json=body, headers=auth(ADMIN))
        assert resp.status == 404
        assert_error(await resp.json(), "backup_not_found", name)


async def test_test_without_any_backup_is_404(client: TestClient) -> None:
    resp = await client.post("/api/backup/test", headers=auth(ADMIN))
    assert resp.status == 404
    assert_error(await resp.json(), "backup_not_found", "no completed backup")


async def test_failed_entry_is_not_usable(client: TestClient, sidecar_app: Sidecar) -> None:
    name = "maekcord-backup-2024-12-01T02-00-00.gz"
    sidecar_app.service.catalog.add(
        {"fileName": name, "fileSize": "0B", "createdAt": "2024-12-01T02:00:00.000Z", "status": "failed"}
    )
    resp = await client.post("/api/backup/restore", json={"fileName": name}, headers=auth(ADMIN))
    assert resp.status == 409
    assert_error(await resp.json(), "backup_not_usable", "failed")


async def test_oversized_body_is_413(client: TestClient) -> None:
    big = json.dumps({"fileName": "a" * (MAX_BODY_BYTES + 10)})
    resp = await client.post("/api/backup/restore", data=big, headers=auth(ADMIN))
    assert resp.status == 413
    body = await resp.json()
    assert body["error"]["code"] == "body_too_large" and str(MAX_BODY_BYTES) in body["error"]["message"]


async def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    resp = await client.post("/api/backup/restore", data=chunks(), headers=auth(ADMIN))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/api/backup/create?wiat=true", "wiat"),
        ("/api/backup/create?wait=yes", "wait"),
        ("/api/backup/create?wait=true&wait=false", "wait"),
    ],
)
async def test_bad_query_on_post_is_400(client: TestClient, path: str, named: str) -> None:
    resp = await client.post(path, headers=auth(ADMIN))
    assert resp.status == 400
    assert named in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/api/v1/monitoring/logs?level=LOUD", "level"),
        ("/api/v1/monitoring/logs?since=yesterday", "since"),
        ("/api/v1/monitoring/logs?since=2024-12-01", "since"),
        ("/api/v1/monitoring/logs?limit=0", "limit"),
        ("/api/v1/monitoring/logs?limit=ten", "limit"),
        ("/api/v1/monitoring/logs?text=" + "x" * 201, "text"),
        ("/api/backup/list?status=great", "status"),
        ("/api/backup/list?limit=-1", "limit"),
        ("/api/backup/status?verbose=1", "verbose"),
    ],
)
async def test_bad_query_on_get_is_400(client: TestClient, path: str, named: str) -> None:
    resp = await client.get(path, headers=auth(READ))
    assert resp.status == 400, await resp.text()
    assert named in (await resp.json())["error"]["message"]


async def test_unknown_path_and_method_are_json(client: TestClient) -> None:
    resp = await client.get("/api/backup/nothing", headers=auth(READ))
    assert resp.status == 404
    assert_error(await resp.json(), "not_found", "/api/backup/nothing")
    resp = await client.delete("/api/backup/list", headers=auth(ADMIN))
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    assert_error(await resp.json(), "method_not_allowed", "DELETE")
    resp = await client.get("/api/backup/create", headers=auth(ADMIN))
    assert resp.status == 405


# -- monitoring ---------------------------------------------------------------------------------


async def test_monitoring_status(client: TestClient, sidecar_app: Sidecar) -> None:
    await backup(client)
    body = await (await client.get("/api/v1/monitoring/status", headers=auth(READ))).json()
    assert body["status"] == "ok"
    assert body["service"]["acceptingJobs"] is True and body["service"]["uptimeSeconds"] >= 0
    assert body["health"]["mongodb"]["up"] is True
    assert body["catalog"]["consistent"] is True and body["catalog"]["completed"] == 1
    scheduler = body["scheduler"]
    assert scheduler["backup"]["schedule"] == "0 2 * * *" and scheduler["backup"]["nextRun"]
    assert scheduler["drill"]["schedule"] == "0 4 * * 0"
    settings = body["settings"]
    assert settings["SIDECAR_ADMIN_TOKEN"] == "set" and ADMIN not in json.dumps(body)


async def test_monitoring_alerts(client: TestClient) -> None:
    body = await (await client.get("/api/v1/monitoring/alerts", headers=auth(READ))).json()
    names = {a["name"] for a in body["alerts"]}
    assert "MongoBackupTooOld" in names and "MongoBackupMongoDBDown" in names
    assert body["active"] == sum(a["active"] for a in body["alerts"])
    assert not next(a for a in body["alerts"] if a["name"] == "MongoBackupMongoDBDown")["active"]


async def test_monitoring_logs_filters_and_job_ids(client: TestClient) -> None:
    job = (await backup(client))["job"]
    resp = await client.get(f"/api/v1/monitoring/logs?jobId={job['id']}", headers=auth(READ))
    records = (await resp.json())["logs"]
    messages = [r["message"] for r in records]
    assert any("started" in m for m in messages) and any("succeeded" in m for m in messages)
    assert all(r["jobId"] == job["id"] for r in records)
    found = await (
        await client.get("/api/v1/monitoring/logs?text=SUCCEEDED&limit=1", headers=auth(READ))
    ).json()
    assert found["count"] == 1 and "succeeded" in found["logs"][0]["message"]
    logging.getLogger("sidecar.test").error("disk on fire")
    errors = await (await client.get("/api/v1/monitoring/logs?level=ERROR", headers=auth(READ))).json()
    assert [r["message"] for r in errors["logs"]] == ["disk on fire"]
    # since: a time as the CLI reads one (sidecar/time_input.py)
    recent = await (await client.get("/api/v1/monitoring/logs?since=now-1h", headers=auth(READ))).json()
    assert "disk on fire" in [r["message"] for r in recent["logs"]]
    later = await (await client.get("/api/v1/monitoring/logs?since=now", headers=auth(READ))).json()
    assert "disk on fire" not in [r["message"] for r in later["logs"]]
    future = await client.get("/api/v1/monitoring/logs?since=2999-01-01T00:00:00Z", headers=auth(READ))
    assert future.status == 400 and "since: '2999-01-01T00:00:00Z' is outside" in await future.text()


async def test_tokens_and_passwords_never_reach_the_logs(client: TestClient, sidecar_app: Sidecar) -> None:
    logging.getLogger("sidecar.test").warning(
        "leak attempt %s %s mongodb://backup:s3cret-pass@db:27017 Authorization: Bearer abcdef123456",
        ADMIN,
        READ,
    )
    await client.get("/api/backup/status", headers=auth(WRONG))
    body = await (await client.get("/api/v1/monitoring/logs?limit=5000", headers=auth(READ))).text()
    for handler in logging.getLogger().handlers:
        handler.flush()  # the files are written by their own thread
    files = "".join(p.read_text() for p in sidecar_app.settings.log_dir.glob("*.log"))
    for text in (body, files, sidecar_app.stdout.getvalue()):  # type: ignore[attr-defined]
        assert "leak attempt" in text
        for secret in (ADMIN, READ, WRONG, "s3cret-pass", "abcdef123456"):
            assert secret not in text


# -- open endpoints and docs --------------------------------------------------------------------


async def test_health_body(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["degraded"] == []
    assert body["mongodb"]["up"] is True and body["mongodb"]["pingSeconds"] >= 0
    assert body["disk"]["freeBytes"] > 0 and body["disk"]["totalBytes"] >= body["disk"]["freeBytes"]
    assert body["checkedAt"].endswith("Z") and body["job"] is None


async def test_metrics_exposition(client: TestClient) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert "mongobackup_build_info" in text and "mongobackup_mongodb_up 1.0" in text
    assert "mongobackup_next_backup_timestamp_seconds" in text


async def test_swagger_ui_is_served_offline(client: TestClient) -> None:
    page = await (await client.get("/api-docs")).text()
    assert "swagger-ui-bundle.js" in page and "http" not in page.replace("charset", "")
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        resp = await client.get(f"/api-docs/assets/{asset}")
        assert resp.status == 200 and len(await resp.read()) > 1000
    init = await (await client.get("/api-docs/init.js")).text()
    assert "/api-docs/openapi.json" in init
    spec = yaml.safe_load(await (await client.get("/api-docs/openapi.yaml")).text())
    assert spec == await (await client.get("/api-docs/openapi.json")).json()


def test_openapi_document_is_valid_and_matches_the_routes(api_settings: Settings) -> None:
    doc = openapi_document()
    validate(doc)
    app = create_app(Sidecar(api_settings))
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None or path.endswith("/") or path.endswith("init.js"):
            continue
        served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert served == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            open_route = (op.get("security") is not None and {} in op["security"]) or op.get("security") == []
            if path.startswith("/api/"):
                assert not open_route, path
                assert "401" in op["responses"], path
            for status in op["responses"]:
                assert status != "default"


# -- integrity tests and restores through the API -------------------------------------------------


@pytest.mark.parametrize("level", ["quick", "full", "drill"])
async def test_test_endpoint_levels(client: TestClient, sidecar_app: Sidecar, level: str) -> None:
    name = (await backup(client))["backup"]["fileName"]
    resp = await client.post("/api/backup/test?wait=true", json={"level": level}, headers=auth(ADMIN))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["job"]["kind"] == "verify" and body["job"]["state"] == "succeeded"
    assert body["job"]["params"] == {"level": level, "fileName": name}
    assert body["verification"]["ok"] is True and body["verification"]["fileName"] == name
    entry = sidecar_app.service.catalog.get(name)
    assert entry["verification"][level]["ok"] is True
    metrics = await (await client.get("/metrics")).text()
    assert f'mongobackup_verify_runs_total{{level="{level}"}} 1.0' in metrics


async def test_runbook_test_call_without_body_is_a_full_test_of_the_newest(client: TestClient) -> None:
    await backup(client)
    name = (await backup(client))["backup"]["fileName"]
    resp = await client.post("/api/backup/test", headers=auth(ADMIN))
    assert resp.status == 202
    job = await wait_job(client, (await resp.json())["job"]["id"])
    assert job["state"] == "succeeded" and job["params"] == {"level": "full", "fileName": name}


async def test_test_of_a_corrupt_archive_is_422(client: TestClient, sidecar_app: Sidecar) -> None:
    name = (await backup(client))["backup"]["fileName"]
    path = sidecar_app.settings.backup_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    resp = await client.post("/api/backup/test?wait=true", json={"fileName": name}, headers=auth(ADMIN))
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "verification_failed" and name in body["error"]["message"]
    assert body["error"]["job"]["state"] == "failed"
    alerts = await (await client.get("/api/v1/monitoring/alerts", headers=auth(READ))).json()
    assert next(a for a in alerts["alerts"] if a["name"] == "MongoBackupVerifyFailed")["active"]


async def test_restore_dry_run_writes_nothing(client: TestClient, mongo_client: Any) -> None:
    name = (await backup(client))["backup"]["fileName"]
    body = {"fileName": name, "nsInclude": "maekcord.patients", "nsFrom": "maekcord.*", "nsTo": "api_dry.*"}
    resp = await client.post(
        "/api/backup/restore?wait=true", json={**body, "dryRun": True}, headers=auth(ADMIN)
    )
    assert resp.status == 200, await resp.text()
    report = (await resp.json())["restore"]
    assert report["dryRun"] is True and report["documents"] == 500
    assert [ns["target"] for ns in report["namespaces"]] == ["api_dry.patients"]
    assert "api_dry" not in mongo_client.list_database_names()


async def test_restore_renamed_namespace(client: TestClient, mongo_client: Any, sample_counts: dict) -> None:
    name = (await backup(client))["backup"]["fileName"]
    body = {
        "fileName": name,
        "nsInclude": ["maekcord.patients"],
        "nsFrom": ["maekcord.*"],
        "nsTo": ["api_restore_copy.*"],
    }
    try:
        resp = await client.post("/api/backup/restore", json=body, headers=auth(ADMIN))
        assert resp.status == 202
        job = await wait_job(client, (await resp.json())["job"]["id"])
        assert job["state"] == "succeeded", job
        assert job["params"]["nsTo"] == ["api_restore_copy.*"]
        copy = mongo_client.api_restore_copy
        assert copy.list_collection_names() == ["patients"]
        assert copy.patients.count_documents({}) == sample_counts["maekcord.patients"]
    finally:
        mongo_client.drop_database("api_restore_copy")


async def test_restore_matching_nothing_is_422(client: TestClient) -> None:
    name = (await backup(client))["backup"]["fileName"]
    body = {"fileName": name, "nsInclude": ["nosuchdb.*"], "dryRun": True}
    resp = await client.post("/api/backup/restore?wait=true", json=body, headers=auth(ADMIN))
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "restore_failed"
