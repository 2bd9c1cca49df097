"""llm_magic.ask_panel end to end: a real JupyterLab (started here, on 127.0.0.1, token auth) and headless
Debian Chromium driven by Python Playwright.

Opens notebooks/panel.ipynb, runs its cells, types a prompt, clicks Ask and sees tokens stream in,
runs another cell while the panel streams, clicks Stop, and checks in the browser that HTML in an
answer is shown as text and never runs; that the answer area is never empty from Ask to the final
view and keeps single line breaks; and that the panel fits the notebook at 800 and 1400 px (no
horizontal overflow, the prompt box inside the panel). Screenshots (and the server log) go to
tests/_artifacts/ on failure.

Skipped when /usr/bin/chromium or playwright is missing, except under CI (``$CI`` set): then it fails.
"""

from __future__ import annotations

import pytest

from jupyterlab_browser import ADD_CELL, KERNEL_IDLE, NOTEBOOK, ROOT, Lab, browser_page, need_browser, open_notebook
from jupyterlab_browser import run_new_cell as _run_new_cell

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

CRAFTED_CELL = r"""
import time, llm_magic
class Crafted:  # a stream-like object with chosen chunks: drives the panel's renderer without a model
    model_name, prompt, phase, answer = "crafted", "crafted", "generate", None
    pieces = ['Crafted: <img src=x onerror="window.__pwned=1"> and ',
              '<script>window.__pwned=1</script> and [link](javascript:window.__pwned=1) **bold** end.']
    def consume(self, on_chunk):
        for p in self.pieces:
            on_chunk(p); time.sleep(0.3)
        self.answer = llm_magic.Answer("".join(self.pieces), n_tokens=2, model="crafted")
        return self.answer
    def stop(self, reason="cancelled"):
        pass
panel.start(Crafted()); print("crafted answer started")
""".strip()

LINES_CELL = r"""
import time, llm_magic
class Lines:  # single line breaks, a long code line and a long word: the renderer and the layout
    model_name, prompt, phase, answer = "crafted", "lines", "generate", None
    pieces = ["first line\n", "second line\n\n", "```\nx = 1  # " + "a long code line " * 30 + "\n```\n\n",
              "a" * 400, " the end"]
    def consume(self, on_chunk):
        for p in self.pieces:
            on_chunk(p); time.sleep(0.3)
        self.answer = llm_magic.Answer("".join(self.pieces), n_tokens=len(self.pieces), model="crafted")
        return self.answer
    def stop(self, reason="cancelled"):
        pass
panel.start(Lines()); print("lines answer started")
""".strip()

LONG_STATUS_CELL = r"""
long = "/a/very/long/path/" + "with-long-directory-names/" * 8 + "model.gguf"
panel.model.options = [(long + " — missing", long)]  # a long label in the dropdown, a long error
panel.ask("hi"); print("long status shown")
""".strip()

# every change in the page, as the answer area's HTML after it (what the next frame can show)
WATCH_ANSWER = """() => {
  window.__answerFrames = [];
  const read = () => {
    const el = document.querySelector('.llm-magic-answer .widget-html-content');
    const html = el ? el.innerHTML : null;
    const frames = window.__answerFrames;
    if (frames.length === 0 || frames[frames.length - 1] !== html) frames.push(html);
  };
  read();
  window.__answerObserver = new MutationObserver(read);
  window.__answerObserver.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""

# horizontal overflow of the panel, its prompt box and anything in it (a scrolling code block or
# table inside the answer excepted: that is where a long line goes)
MEASURE = """() => {
  const panel = document.querySelector('.llm-magic-panel');
  const box = panel.querySelector('.llm-magic-prompt');
  const ta = box.querySelector('textarea');
  const p = panel.getBoundingClientRect();
  const out = panel.closest('.jp-OutputArea-output') || panel.parentElement;
  const sticking = [];
  for (const el of panel.querySelectorAll('*')) {
    if (el.closest('.llm-magic-answer pre, .llm-magic-answer table') && !el.matches('pre, table')) continue;
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > p.right + 0.5) sticking.push(el.tagName + '.' + el.className + ' ' + r.right);
  }
  return {
    panel: [panel.scrollWidth, panel.clientWidth, p.right],
    area: [out.scrollWidth, out.clientWidth, out.getBoundingClientRect().right],
    textarea: [ta.scrollWidth, ta.clientWidth],
    prompt_right: box.getBoundingClientRect().right,
    textarea_right: ta.getBoundingClientRect().right,
    sticking: sticking.slice(0, 10),
    code: Array.from(panel.querySelectorAll('.llm-magic-answer pre'), (c) => [c.scrollWidth, c.clientWidth]),
  };
}"""

CONTROL_CELL = r"""
import ipywidgets
ipywidgets.HTML('<img src=x onerror="window.__control=1"> raw HTML control')
""".strip()


def test_panel_streams_in_jupyterlab_in_chromium(tmp_path, tiny_model, request):
    expect, _ = need_browser()
    lab = Lab(tmp_path, tiny_model, notebooks=(ROOT / "notebooks" / "panel.ipynb",))
    with browser_page(tmp_path, lab, request.node.name) as page:
        _drive(page, lab, expect)


def _drive(page, lab: Lab, expect) -> None:
    open_notebook(page, lab, "panel.ipynb")

    # 1. run the notebook's cells
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    panel = page.locator(".llm-magic-panel")
    expect(panel).to_have_count(1, timeout=60_000)
    expect(page.get_by_text("the kernel is free: 45")).to_be_visible()
    expect(page.get_by_text("timed out after 2 s — partial answer").first).to_be_visible(timeout=90_000)
    page.wait_for_function(KERNEL_IDLE)
    status = panel.locator(".llm-magic-status")
    answer = panel.locator(".llm-magic-answer")
    expect(status).to_contain_text("finish: timeout")

    # 2. type a prompt, ask for a long answer, click Ask: tokens appear
    panel.locator(".llm-magic-prompt textarea").fill("Tell me a very long story about a lighthouse keeper.")
    for cls, value in ((".llm-magic-max-tokens", "100000"), (".llm-magic-timeout", "120")):
        field = panel.locator(f"{cls} input")
        field.fill(value)
        field.press("Enter")
    ask, stop = panel.locator(".llm-magic-ask"), panel.locator(".llm-magic-stop")
    expect(stop).to_be_disabled()
    ask.click()
    expect(status).to_contain_text("generating", timeout=30_000)
    expect(ask).to_be_disabled()
    expect(stop).to_be_enabled()
    page.wait_for_function("() => document.querySelector('.llm-magic-answer').innerText.length > 200")
    first_len = len(answer.inner_text())

    # 3. while the panel streams, another cell runs and shows its output
    index = page.evaluate(ADD_CELL, 'print("kernel free while streaming:", 6 * 7)')
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.click()
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-OutputArea-output")).to_contain_text("kernel free while streaming: 42", timeout=30_000)
    expect(status).to_contain_text("generating")  # still streaming after that cell ran
    page.wait_for_function(f"() => document.querySelector('.llm-magic-answer').innerText.length > {first_len + 200}")

    # 4. Stop: the cancelled state
    stop.click()
    expect(status).to_contain_text("finish: cancelled", timeout=15_000)
    expect(answer).to_contain_text("cancelled — partial answer")
    expect(ask).to_be_enabled()
    expect(stop).to_be_disabled()

    # 5. security: HTML in an answer is text, and never runs (streamed through the panel's renderer)
    page.wait_for_function(KERNEL_IDLE)
    index = page.evaluate(ADD_CELL, CRAFTED_CELL)
    page.evaluate(
        f"(i) => {{ {NOTEBOOK}.content.activeCellIndex = i; "
        "return window.jupyterapp.commands.execute('notebook:run-cell'); }",
        index,
    )
    expect(page.locator(".jp-Notebook .jp-Cell").nth(index)).to_contain_text("crafted answer started")
    expect(answer).to_contain_text('Crafted: <img src=x onerror="window.__pwned=1"> and', timeout=15_000)
    expect(answer).to_contain_text("<script>window.__pwned=1</script>")
    expect(status).to_contain_text("finish: stop", timeout=15_000)
    expect(answer.locator("strong")).to_have_text("bold")  # Markdown still renders
    assert answer.locator("img, script, a[href^='javascript']").count() == 0
    assert page.evaluate("() => typeof window.__pwned") == "undefined"

    # ... and the check is able to see an injection: raw HTML in a plain HTML widget does run
    index = page.evaluate(ADD_CELL, CONTROL_CELL)
    page.evaluate(
        f"(i) => {{ {NOTEBOOK}.content.activeCellIndex = i; "
        "return window.jupyterapp.commands.execute('notebook:run-cell'); }",
        index,
    )
    expect(page.locator(".widget-html-content", has_text="raw HTML control")).to_be_visible()
    page.wait_for_function("() => window.__control === 1", timeout=10_000)
    assert page.evaluate("() => typeof window.__pwned") == "undefined"

    # 6. from Ask to the final view the answer area is never empty, and single line breaks stay
    page.evaluate(WATCH_ANSWER)
    _run_new_cell(page, LINES_CELL, "lines answer started")
    expect(status).to_contain_text("finish: stop", timeout=15_000)
    expect(answer).to_contain_text("the end")
    frames = page.evaluate("() => { window.__answerObserver.disconnect(); return window.__answerFrames; }")
    assert len(frames) >= 4, frames  # the earlier answer, the cursor, tokens, the final view
    assert all(f and f.strip() for f in frames), [f[:80] if f else f for f in frames]
    assert "▌" in frames[-2] and "▌" not in frames[-1]  # the final view replaced the streamed one
    assert "first line<br" in frames[-1] and "second line" in frames[-1]
    assert any("first line<br" in f and "▌" in f for f in frames), "no line break while streaming"

    # 7. the panel fits the notebook, with a long code line, a long word and a long status line
    _check_fits(page, "a long answer", code_scrolls=True)
    _run_new_cell(page, LONG_STATUS_CELL, "long status shown")
    expect(status).to_contain_text("model file not found: /a/very/long/path/")
    _check_fits(page, "a long status line")


def _check_fits(page, what: str, code_scrolls: bool = False) -> None:
    for width in (800, 1400):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)  # JupyterLab lays out again on resize
        page.locator(".llm-magic-panel").scroll_into_view_if_needed()
        m = page.evaluate(MEASURE)
        where = f"{what} at {width} px: {m}"
        assert m["panel"][0] <= m["panel"][1], f"the panel overflows horizontally, {where}"
        assert m["textarea"][0] <= m["textarea"][1], f"the prompt box overflows, {where}"
        assert m["prompt_right"] <= m["panel"][2] + 0.5 and m["textarea_right"] <= m["panel"][2] + 0.5, where
        assert m["panel"][2] <= m["area"][2] + 0.5, f"the panel is wider than its output area, {where}"
        assert not m["sticking"], f"something sticks out of the panel, {where}"
        assert m["area"][0] <= m["area"][1], f"the output area scrolls horizontally, {where}"
        if code_scrolls:  # the long code line keeps its shape and scrolls, in its own block only
            assert m["code"] and all(sw > cw for sw, cw in m["code"]), where
    page.set_viewport_size({"width": 1280, "height": 1000})
