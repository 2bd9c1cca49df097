"""The JupyterLab extension as shipped (issue 16): the committed build matches its sources' package
metadata, a wheel built from this checkout installs it where JupyterLab finds prebuilt extensions, and
`jupyter labextension list` shows it enabled. (`make labextension-check`, run by CI, rebuilds it from
the TypeScript and fails when the committed build differs.)"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import llm_magic

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension"
BUILD = ROOT / "llm_magic" / "labextension"
NAME = "llm-magic"

pytestmark = pytest.mark.slow


def _listing(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # no colours


def _section(listing: str, directory: Path) -> str:
    """The lines `jupyter labextension list` prints under ``directory``."""
    lines, inside = [], False
    for line in listing.splitlines():
        if not line.startswith(" ") and line.strip():
            inside = Path(line.strip()) == directory
        elif inside:
            lines.append(line.strip())
    return "\n".join(lines)


def test_the_build_is_the_sources_package():
    source = json.loads((SOURCE / "package.json").read_text())
    built = json.loads((BUILD / "package.json").read_text())
    assert source["name"] == built["name"] == NAME
    assert source["version"] == built["version"] == llm_magic.__version__, "make labextension after a version bump"
    assert source["dependencies"] == built["dependencies"]
    load = built["jupyterlab"]["_build"]["load"]
    assert (BUILD / load).is_file(), load
    install = json.loads((BUILD / "install.json").read_text())
    assert install == json.loads((SOURCE / "install.json").read_text())
    assert install["packageManager"] == "python" and install["packageName"] == NAME
    # no stale chunks from an earlier build: every static file is this build's
    static = {p.name for p in (BUILD / "static").iterdir()}
    assert Path(load).name in static and len([n for n in static if n.startswith("remoteEntry.")]) == 1, static


def test_a_wheel_puts_the_extension_where_jupyterlab_finds_it(tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: the wheel is built from the tracked files")
    src = tmp_path / "src"
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("llm_magic-*.whl")
    data = f"llm_magic-{llm_magic.__version__}.data/data/share/jupyter/labextensions/{NAME}/"
    with zipfile.ZipFile(wheel) as z:
        shipped = {n[len(data) :] for n in z.namelist() if n.startswith(data)}
    expected = {str(p.relative_to(BUILD)) for p in BUILD.rglob("*") if p.is_file()}
    assert shipped == expected

    prefix = tmp_path / "prefix"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--ignore-installed",  # else pip uninstalls this environment's llm-magic first
            "--prefix",
            str(prefix),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    here = subprocess.run(
        [sys.executable, "-c", "import llm_magic; print(llm_magic.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert here.returncode == 0 and Path(here.stdout.strip()).is_relative_to(ROOT), "this environment lost llm_magic"
    installed = prefix / "share" / "jupyter" / "labextensions"
    assert (installed / NAME / "install.json").is_file()
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    section = _section(_listing(env), installed)
    assert f"{NAME} v{llm_magic.__version__} enabled OK (python, {NAME})" in section, section


def test_this_environment_lists_it_enabled(tmp_path):
    """`make install` / `make test` link the committed build into the venv (an editable install places
    no data files); JupyterLab lists it enabled and OK."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    listing = _listing(env)
    assert re.search(rf"^\s*{NAME} v{re.escape(llm_magic.__version__)} enabled OK", listing, re.M), listing


STAGE = Path("/tmp/llm_magic-labextension/labextension")  # the Makefile's LABEXT_STAGE: where it builds


def test_typescript_unit_tests():
    """The extension's own tests (labextension/test/, node's test runner on fakes of JupyterLab's
    kernel and cells): prefix trimming, modes, the comm client, the provider's streaming and
    cancelling. They run on this checkout's sources with the packages `make labextension`
    installed in its build directory (under the build's lock)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    npm = shutil.which("npm", path=path)
    lock_file = STAGE.parent.with_suffix(".lock")
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = (STAGE / "node_modules" / "typescript").is_dir() and (STAGE / "package-lock.json").is_file()
        if (
            npm is None
            or not ready
            or (STAGE / "package-lock.json").read_bytes() != (SOURCE / "package-lock.json").read_bytes()
        ):
            reason = (
                f"npm, or {STAGE}/node_modules for this package-lock.json, is missing (make labextension installs them)"
            )
            if os.environ.get("CI"):
                pytest.fail(f"{reason}; CI runs make labextension-check first")
            pytest.skip(reason)
        for name in ("src", "test", "build-test"):
            shutil.rmtree(STAGE / name, ignore_errors=True)
        for name in ("src", "test"):
            shutil.copytree(SOURCE / name, STAGE / name)
        for name in ("package.json", "tsconfig.json", "tsconfig.test.json"):
            shutil.copy2(SOURCE / name, STAGE / name)
        out = subprocess.run(
            [npm, "test", "--silent"],
            cwd=STAGE,
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    passed = re.search(r"^ℹ pass (\d+)$", out.stdout, re.M)
    failed = re.search(r"^ℹ fail (\d+)$", out.stdout, re.M)
    n_tests = sum(f.read_text().count("\n  it(") for f in (SOURCE / "test").glob("*.test.ts"))
    assert passed and failed and int(passed.group(1)) == n_tests and failed.group(1) == "0", out.stdout[-2000:]
