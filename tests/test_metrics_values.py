"""Counter and timestamp values on ``GET /metrics``, read from the real exposition text: a manual backup
through the API and a scheduled one (the scheduler's own coroutine) are both counted, by trigger.

The Prometheus end-to-end test checks the same series through a scrape; this one runs without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sidecar.api.app import Sidecar, create_app
from sidecar.api.state import SIDECAR_KEY
from sidecar.config import Settings
from sidecar.metrics import STAGES, TRIGGERS
from sidecar.time_input import parse_iso

ADMIN = "admin-token-for-metrics-0123456789"


@pytest.fixture
async def client(
    aiohttp_client: Any, make_settings: Callable[..., Settings], sample_counts: dict[str, int]
) -> TestClient:
    settings = make_settings(admin_token=ADMIN, verify_after_backup="off", database="maekcord")
    return await aiohttp_client(create_app(Sidecar(settings)))


async def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    families = text_string_to_metric_families(await resp.text())
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def counts(samples: dict, name: str) -> dict[str, float]:
    """``{trigger: value}`` of a backup counter."""
    return {dict(labels)["trigger"]: v for (n, labels), v in samples.items() if n == name}


def one(samples: dict, name: str) -> float:
    return samples[(name, frozenset())]


def newest_finish(sidecar: Sidecar) -> float:
    return parse_iso(sidecar.service.list_backups()[-1]["finishedAt"]).timestamp()


async def test_manual_and_scheduled_backups_are_counted_by_trigger(client: TestClient) -> None:
    sidecar = client.app[SIDECAR_KEY]
    before = await scrape(client)
    assert counts(before, "mongobackup_backup_successes_total") == dict.fromkeys(TRIGGERS, 0)
    assert one(before, "mongobackup_backup_last_success_timestamp_seconds") == 0

    resp = await client.post("/api/backup/create?wait=true", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200, await resp.text()
    manual = await scrape(client)
    just_manual = {"manual": 1, "schedule": 0, "cronjob": 0}
    assert counts(manual, "mongobackup_backup_runs_total") == just_manual
    assert counts(manual, "mongobackup_backup_successes_total") == just_manual
    assert one(manual, "mongobackup_backup_last_success_timestamp_seconds") == pytest.approx(
        newest_finish(sidecar), abs=0.01
    )

    await sidecar.scheduler.scheduled_backup()
    scheduled = await scrape(client)
    assert counts(scheduled, "mongobackup_backup_runs_total") == {"manual": 1, "schedule": 1, "cronjob": 0}
    assert counts(scheduled, "mongobackup_backup_successes_total") == {
        "manual": 1,
        "schedule": 1,
        "cronjob": 0,
    }
    failures = {k: v for k, v in scheduled.items() if k[0] == "mongobackup_backup_failures_total"}
    assert len(failures) == len(TRIGGERS) * len(STAGES) and set(failures.values()) == {0}
    last_success = one(scheduled, "mongobackup_backup_last_success_timestamp_seconds")
    assert last_success == pytest.approx(newest_finish(sidecar), abs=0.01)
    assert last_success > one(manual, "mongobackup_backup_last_success_timestamp_seconds")
    assert one(scheduled, "mongobackup_backup_last_success") == 1
    assert one(scheduled, "mongobackup_backup_duration_seconds_count") == 2
