"""Ghost-text completions end to end (issue 16): a real JupyterLab with llm_magic's prebuilt extension,
headless Chromium driven by Playwright, the default model (Gemma 3 270M) in the kernel.

Before llm_magic is loaded the provider is silent: typing gives no ghost text and no dialog. After
``%load_ext llm_magic``: typing code in a cell shows ghost text from our provider, Tab accepts it into
the cell, Escape dismisses it (the cell keeps what was typed), it still comes while another cell
runs (the comm is served on a kernel subshell), and a console on the same kernel gets it too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jupyterlab_browser import KERNEL_IDLE, NOTEBOOK, Lab, browser_page, need_browser, open_notebook

pytestmark = [pytest.mark.slow, pytest.mark.real_model, pytest.mark.timeout(600)]

PROVIDER = "@llm-magic/inline"
GHOST = f'.jp-GhostText[data-provided-by="{PROVIDER}"]'

CONTEXT_CELL = """import math


def area_of_circle(radius):
    return math.pi * radius ** 2


def area_of_square(side):
    return side ** 2"""


SLEEP_CELL = "import time\ntime.sleep(60)"

# the cells: context, loading llm_magic (the first ask waits for the model), a cell to type in, a long cell, another cell to type in
CELLS = (CONTEXT_CELL, "%load_ext llm_magic\n%ask -n 1 Say hi", "", SLEEP_CELL, "")


def _notebook(path: Path) -> Path:
    def cell(source: str) -> dict:
        return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}

    nb = {
        "cells": [cell(c) for c in CELLS],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))
    return path


# the source of cell i, and run cell i (through JupyterLab's own command)
SOURCE = f"(i) => {NOTEBOOK}.content.widgets[i].model.sharedModel.getSource()"
RUN_CELL = f"""(i) => {{
  {NOTEBOOK}.content.activeCellIndex = i;
  return window.jupyterapp.commands.execute('notebook:run-cell');
}}"""
START_CELL = f"""(i) => {{
  {NOTEBOOK}.content.activeCellIndex = i;
  void window.jupyterapp.commands.execute('notebook:run-cell');  // not awaited: it resolves when the cell ends
}}"""
RUNNING = f"(i) => {NOTEBOOK}.content.widgets[i].node.querySelector('.jp-InputPrompt').textContent.includes('*')"
SET_SOURCE = f"([i, text]) => {NOTEBOOK}.content.widgets[i].model.sharedModel.setSource(text)"
STREAMING = ".jp-GhostText-streamingIndicator"


def test_ghost_text_in_jupyterlab(tmp_path, request):
    expect, _ = need_browser()
    from llm_magic import default_model

    lab = Lab(tmp_path, str(default_model.path()), notebooks=(_notebook(tmp_path / "inline.ipynb"),))
    with browser_page(tmp_path, lab, request.node.name) as page:
        _drive(page, lab, expect)


def _type_in_cell(page, index: int, text: str) -> None:
    """Click into cell ``index`` (edit mode, cursor at the end) and type ``text`` key by key."""
    editor = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text, delay=30)


def _wait_ghost(page, expect) -> str:
    """The ghost text of our provider once it has finished streaming."""
    ghost = page.locator(GHOST)
    expect(ghost).to_have_count(1, timeout=45_000)
    expect(page.locator(STREAMING)).to_have_count(0, timeout=45_000)
    text = ghost.text_content() or ""
    assert text.strip(), f"empty ghost text: {text!r}"
    return text


def _drive(page, lab: Lab, expect) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_notebook(page, lab, "inline.ipynb")

    # 1. llm_magic not loaded: typing gives no ghost text and no dialog
    page.evaluate(RUN_CELL, 0)
    page.wait_for_function(KERNEL_IDLE)
    _type_in_cell(page, 2, "def perimeter_of_square(side):")
    page.wait_for_timeout(4_000)
    assert page.locator(".jp-GhostText").count() == 0
    assert page.locator(".jp-Dialog").count() == 0
    page.evaluate(SET_SOURCE, [2, ""])

    # 2. load llm_magic (the default model preloads in the background), then type: ghost text comes
    page.evaluate(RUN_CELL, 1)
    page.wait_for_function(KERNEL_IDLE)
    _type_in_cell(page, 2, "def perimeter_of_square(side):")
    ghost = _wait_ghost(page, expect)
    before = page.evaluate(SOURCE, 2)
    assert before == "def perimeter_of_square(side):", before

    # Tab accepts it: the cell now holds what was typed plus the ghost text
    page.keyboard.press("Tab")
    expect(page.locator(GHOST)).to_have_count(0, timeout=10_000)
    after = page.evaluate(SOURCE, 2)
    # (the ghost text shows a line break as a line of its own, not as a character)
    assert after.startswith(before) and after[len(before) :].replace("\n", "") == ghost.replace("\n", ""), (
        before,
        ghost,
        after,
    )
    assert "return" in after, after  # Gemma completes the function's body

    # 3. Escape dismisses a ghost text: the cell keeps only what was typed
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    page.keyboard.type("def volume_of_cube(side):", delay=30)
    _wait_ghost(page, expect)
    before = page.evaluate(SOURCE, 2)
    page.keyboard.press("Escape")
    expect(page.locator(GHOST)).to_have_count(0, timeout=10_000)
    page.wait_for_timeout(500)
    assert page.evaluate(SOURCE, 2) == before
    assert page.locator(".jp-Dialog").count() == 0

    # 4. while another cell runs, ghost text still comes (the comm is served on a kernel subshell)
    page.evaluate(START_CELL, 3)
    page.wait_for_function(RUNNING, arg=3, timeout=30_000)
    started = time.monotonic()
    _type_in_cell(page, 4, "def area_of_triangle(base, height):")
    _wait_ghost(page, expect)
    # the long cell still runs: its prompt says so (JupyterLab's kernel status is not the check: it
    # shows the last busy/idle of any subshell, so the completion's own idle reads "idle" there)
    assert page.evaluate(RUNNING, 3), "the long cell ended before the ghost text came"
    assert time.monotonic() - started < 50, "the ghost text waited for the running cell"
    page.keyboard.press("Escape")
    page.evaluate(f"() => {NOTEBOOK}.sessionContext.session.kernel.interrupt()")
    page.wait_for_function(KERNEL_IDLE, timeout=30_000)
    assert page.locator(".jp-Dialog").count() == 0

    # 5. a console on the same kernel gets ghost text too
    page.evaluate("async () => { await window.jupyterapp.commands.execute('notebook:create-console'); }")
    prompt = page.locator(".jp-CodeConsole-promptCell .cm-content")
    expect(prompt).to_be_visible(timeout=30_000)
    prompt.click()
    page.keyboard.type("def volume_of_sphere(radius):", delay=30)
    _wait_ghost(page, expect)
    page.keyboard.press("Tab")
    expect(page.locator(GHOST)).to_have_count(0, timeout=10_000)
    assert "return" in prompt.inner_text(), prompt.inner_text()
    # the provider never failed (it logs "llm_magic: inline completion failed"), before or after
    # llm_magic was loaded; nor did JupyterLab's inline completer (it warns what a provider throws)
    ours = [e for e in errors if "llm" in e.lower() or "inline" in e.lower()]
    assert not ours, ours
