"""docs/deployment.md stays in step with deploy/: every file is mentioned and the sizing numbers match."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "deployment.md"
DEPLOY = ROOT / "deploy"


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*") if p.is_file()), ids=str)
def test_every_deployment_file_is_documented(path: Path) -> None:
    assert path.name in DOC.read_text(), f"docs/deployment.md does not mention {path}"


def unit_value(name: str, key: str) -> str:
    [value] = re.findall(rf"^{key}=(.*)$", (DEPLOY / "systemd" / name).read_text(), re.MULTILINE)
    return str(value)


def test_the_sizing_table_matches_the_files() -> None:
    doc = DOC.read_text()
    cron = yaml.safe_load((DEPLOY / "kubernetes" / "cronjob.yaml").read_text())["spec"]
    job = cron["jobTemplate"]["spec"]
    assert f"activeDeadlineSeconds: {job['activeDeadlineSeconds']}" in doc
    assert f"startingDeadlineSeconds: {cron['startingDeadlineSeconds']}" in doc
    assert f"backoffLimit: {job['backoffLimit']}" in doc
    assert f'schedule: "{cron["schedule"]}"' in doc
    assert f"TimeoutStartSec={unit_value('usage-collector.service', 'TimeoutStartSec')}" in doc
    assert f"TimeoutStopSec={unit_value('usage-collector-serve.service', 'TimeoutStopSec')}" in doc
    assert f"OnCalendar={unit_value('usage-collector.timer', 'OnCalendar')}" in doc
    assert "was not built" in doc  # no container engine here: say so
