"""deploy/systemd: the units carry the required directives, and systemd itself accepts them.

The directive checks parse the unit files and always run. ``systemd-analyze`` (Debian's ``systemd`` package)
runs when it is installed and is skipped otherwise; it needs no running systemd (``verify``, ``calendar`` and
``security --offline=yes`` all work in a container).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
SERVICE = UNITS / "usage-collector.service"
TIMER = UNITS / "usage-collector.timer"
SERVE = UNITS / "usage-collector-serve.service"
BINARY = "/usr/local/bin/usage-collector"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd)"
)

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """A systemd unit file as ``{section: [(key, value), ...]}``, keeping repeated keys in order."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        assert "=" in line, f"{path.name}: not a key=value line: {line!r}"
        assert not line.endswith("\\"), f"{path.name}: keep directives on one line"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= expected once, found {found}"
    return found[0]


def env(unit: Unit) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values(unit, "Service", "Environment"):
        name, _, val = value.partition("=")
        out[name] = val
    return out


HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


@pytest.mark.parametrize("path", [SERVICE, SERVE], ids=lambda p: p.name)
def test_services_are_hardened_and_get_the_key_as_a_credential(path: Path) -> None:
    unit = parse_unit(path)
    for key, expected in HARDENING.items():
        assert one(unit, "Service", key) == expected, key
    assert values(unit, "Service", "SystemCallFilter")[0] == "@system-service"
    assert one(unit, "Service", "StateDirectory") == "usage-collector"
    assert one(unit, "Service", "LoadCredential") == "openai-admin-key:/etc/usage-collector/openai-admin-key"
    variables = env(unit)
    assert variables["OPENAI_ADMIN_KEY_FILE"] == "%d/openai-admin-key"
    assert variables["USAGE_COLLECTOR_SINK"] == "duckdb:/var/lib/usage-collector/usage.duckdb"
    assert "OPENAI_ADMIN_KEY" not in variables  # the key itself is never in the environment
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/usage-collector/env"
    assert "network-online.target" in one(unit, "Unit", "After")
    text = path.read_text()
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)


def test_oneshot_service_runs_one_cycle_within_the_interval() -> None:
    unit = parse_unit(SERVICE)
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Service", "ExecStart") == f"{BINARY} run"
    assert one(unit, "Service", "TimeoutStartSec") == "4min"  # below the 5-minute timer interval
    assert "Install" not in unit  # started by the timer, not enabled itself


def test_timer_fires_every_five_minutes_and_catches_up() -> None:
    unit = parse_unit(TIMER)
    assert one(unit, "Timer", "OnCalendar") == "*:0/5"
    assert one(unit, "Timer", "Persistent") == "true"
    assert one(unit, "Timer", "RandomizedDelaySec") == "60"
    assert one(unit, "Timer", "AccuracySec") == "1us"
    assert one(unit, "Timer", "Unit") == SERVICE.name
    assert one(unit, "Install", "WantedBy") == "timers.target"


def test_serve_unit_restarts_on_failure_and_stops_gracefully() -> None:
    unit = parse_unit(SERVE)
    assert one(unit, "Service", "Type") == "simple"
    assert one(unit, "Service", "ExecStart").startswith(f"{BINARY} serve --interval 5m")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    stop = one(unit, "Service", "TimeoutStopSec")
    assert stop.endswith("s") and int(stop[:-1]) > 60  # > serve's 60 s default stop timeout
    assert SERVICE.name in one(unit, "Unit", "Conflicts") and TIMER.name in one(unit, "Unit", "Conflicts")
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


# --- systemd-analyze ---------------------------------------------------------------------------------------


@pytest.fixture
def verifiable_units(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart= binary exists.

    ``systemd-analyze verify`` fails when an ``ExecStart=`` program is missing, and this machine has no
    /usr/local/bin/usage-collector. The copies point ExecStart= at a stub script in the same temporary
    directory; nothing else changes, so every other directive is verified as shipped.
    """
    stub = tmp_path / "usage-collector"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for src in (SERVICE, TIMER, SERVE):
        (tmp_path / src.name).write_text(src.read_text().replace(BINARY, str(stub)))
    return tmp_path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, env={**os.environ, "SYSTEMD_PAGER": ""}
    )


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    # --man=no: do not look up Documentation= man pages; --generators=no: do not run system generators.
    return analyze("verify", "--man=no", "--generators=no", *map(str, paths))


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_units(verifiable_units: Path) -> None:
    result = verify([verifiable_units / p.name for p in (SERVICE, TIMER, SERVE)])
    # verify exits 0 on unknown keys or unparsable values and only warns on stderr: accept no output.
    mine = [line for line in result.stderr.splitlines() if str(verifiable_units) in line]
    assert result.returncode == 0, result.stderr
    assert mine == [], "\n".join(mine)


@needs_systemd_analyze
def test_systemd_analyze_verify_would_catch_a_bad_directive(verifiable_units: Path) -> None:
    bad = verifiable_units / "broken.service"
    shipped = (verifiable_units / SERVICE.name).read_text()
    bad.write_text(shipped.replace("TimeoutStartSec=4min", "TimeoutStartSec=4 lunar"))
    result = verify([bad])
    assert "TimeoutStartSec" in result.stderr  # so the empty-stderr assertion above is not vacuous


@needs_systemd_analyze
def test_systemd_analyze_calendar_normalizes_the_timer_schedule() -> None:
    result = analyze("calendar", "*:0/5")
    assert result.returncode == 0, result.stderr
    assert "*-*-* *:00/5:00" in result.stdout


@needs_systemd_analyze
@pytest.mark.parametrize("name", [SERVICE.name, SERVE.name])
def test_systemd_analyze_security_rates_the_services_ok(verifiable_units: Path, name: str) -> None:
    result = analyze("security", "--offline=yes", str(verifiable_units / name))
    if result.returncode != 0 and "offline" in result.stderr:  # pragma: no cover - systemd < 250
        pytest.skip("this systemd-analyze has no --offline")
    match = re.search(r"Overall exposure level for .*: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout  # systemd calls < 2.0 "OK"; most services score 9+


# --- MemoryDenyWriteExecute= does not break Python ---------------------------------------------------------

_MDWE_PROBE = r"""
import ctypes, mmap, ssl
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    raise SystemExit("MDWE is not in force: a writable+executable mapping was allowed")
except PermissionError:
    pass
ssl.create_default_context()
import duckdb, orjson, pydantic, httpx, elasticsearch, apscheduler, ecs_logging, rich, typer  # noqa
import usage_collector.cli, usage_collector.collector, usage_collector.logs, usage_collector.schedule  # noqa
assert duckdb.connect(":memory:").execute("select sum(range) from range(100000)").fetchone() == (4999950000,)
assert orjson.loads(orjson.dumps({"a": 1})) == {"a": 1}
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42  # libffi closures
print("ok")
"""


def test_python_and_its_dependencies_run_without_writable_executable_memory() -> None:
    """``MemoryDenyWriteExecute=yes`` forbids memory that is both writable and executable (JITs need it).

    systemd 252 enforces it with seccomp; Linux >= 6.3 offers the same rule as ``prctl(PR_SET_MDWE)``,
    inherited across exec. The probe runs the interpreter and every native dependency under it.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    code = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "    sys.exit(77)\n"
        f"os.execv(sys.executable, [sys.executable, '-c', {_MDWE_PROBE!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
