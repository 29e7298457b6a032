"""Every ``usage-collector COMMAND --flag`` the docs and deployment files show is a flag that command accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from usage_collector.cli import GLOBAL_FLAGS, GLOBAL_VALUED, app, main  # noqa: F401
from usage_collector.simulator.cli import register

if not any(c.name == "simulate" for c in app.registered_commands):
    register(app)
ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").rglob("*.*"))]
COMMAND = re.compile(r"usage-collector((?:\s+(?:-[-\w]+|[\w.:/=-]+))*)")


def accepted() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        out[name] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    return out


def uses() -> list[tuple[str, str, str]]:
    found = []
    commands = accepted()
    for path in DOCS:
        if path.suffix in (".lock", ".whl") or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            for m in COMMAND.finditer(line):
                words = m.group(1).split()
                names = [w for w in words if w in commands]
                if not names:
                    continue
                for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", m.group(1)):
                    found.append((path.relative_to(ROOT).as_posix(), names[0], flag.split("=")[0]))
    return sorted(set(found))


@pytest.mark.parametrize(("where", "command", "flag"), uses(), ids=lambda v: str(v))
def test_documented_flags_exist(where: str, command: str, flag: str) -> None:
    assert flag in accepted()[command] | set(GLOBAL_VALUED) | set(GLOBAL_FLAGS), (
        f"{where}: `usage-collector {command}` has no {flag}"
    )
