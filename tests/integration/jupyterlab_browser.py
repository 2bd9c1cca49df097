"""What the browser tests share: a real JupyterLab started on 127.0.0.1 (token auth, every Jupyter/IPython
dir in the test's tmp dir) and headless Debian Chromium driven by Python Playwright, with helpers that run
JavaScript in the page and keep a screenshot and the server log on failure (tests/_artifacts/).

A test calls ``need`` first: it skips when /usr/bin/chromium or playwright is missing, except under CI
(``$CI`` set), where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "_artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run; .ci/run installs chromium)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a process group of its own, with every Jupyter/IPython dir in ``tmp``."""

    def __init__(self, tmp: Path, model: str, notebooks: tuple[Path, ...] = ()):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.root = tmp / "root"
        self.root.mkdir()
        for notebook in notebooks:
            shutil.copy(notebook, self.root / notebook.name)
        config = tmp / "jupyter-config"
        (config / "labconfig").mkdir(parents=True)
        # no "get notified about official Jupyter news?" toast; the user's own config is untouched
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        env = {
            **os.environ,
            "LLM_MAGIC_MODEL": model,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("JUPYTER_TOKEN", None)
        self.log_path = tmp / "jupyterlab.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the server writes to it until stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                "--ServerApp.allow_root=True",
                "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands like a user would
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            cwd=self.root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the kernels it started
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()


# JavaScript helpers, run in the page -------------------------------------------------------------

NOTEBOOK = "window.jupyterapp.shell.currentWidget"
KERNEL_IDLE = f"""() => {{
  const w = {NOTEBOOK};
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content && w.content.widgets.length > 0;
}}"""
ADD_CELL = f"""(source) => {{
  const nb = {NOTEBOOK}.content;
  nb.activeCellIndex = nb.widgets.length - 1;
  return window.jupyterapp.commands.execute('notebook:insert-cell-below').then(() => {{
    nb.activeCell.model.sharedModel.setSource(source);
    return nb.widgets.length - 1;
  }});
}}"""


def save_failure(page, lab: Lab, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if page is not None:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # noqa: BLE001 - the page may be gone
            print(f"screenshot failed: {exc}", file=sys.stderr)
    (ARTIFACTS / f"{name}.jupyterlab.log").write_text(lab.log())
    print(f"failure artifacts in {ARTIFACTS}", file=sys.stderr)


def run_new_cell(page, source: str, printed: str) -> None:
    index = page.evaluate(ADD_CELL, source)
    page.evaluate(
        f"(i) => {{ {NOTEBOOK}.content.activeCellIndex = i; "
        "return window.jupyterapp.commands.execute('notebook:run-cell'); }",
        index,
    )
    output = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea-output")
    output.filter(has_text=printed).first.wait_for(timeout=30_000)  # the cell ran


def need_browser():
    """Playwright's ``(expect, sync_playwright)``, after checking that the browser test can run."""
    need(os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        need(False, "playwright is not installed (pip install 'llm-magic[browser]')")
    return expect, sync_playwright


@contextlib.contextmanager
def browser_page(tmp_path: Path, lab: Lab, name: str, viewport: dict | None = None) -> Iterator:
    """A Chromium page on a fresh profile, for a started ``lab``; a screenshot and the log on failure.
    Stops the server at the end."""
    _, sync_playwright = need_browser()
    page = None
    try:
        lab.wait_ready()
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=viewport or {"width": 1280, "height": 1000},
            )
            context.set_default_timeout(60_000)
            page = context.pages[0] if context.pages else context.new_page()
            try:
                yield page
            except BaseException:
                save_failure(page, lab, name)
                raise
            finally:
                context.close()
    except BaseException:
        if page is None:
            save_failure(None, lab, name)
        raise
    finally:
        lab.stop()


def open_notebook(page, lab: Lab, name: str) -> None:
    """Open ``name`` in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=90_000)
    page.wait_for_function(KERNEL_IDLE, timeout=90_000)
