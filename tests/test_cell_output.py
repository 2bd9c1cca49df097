"""llm_magic.ipython.cell_output: StreamDisplay, the answer streaming into a cell's output."""

from __future__ import annotations

import io
import time
import types
from itertools import pairwise

from IPython.utils.capture import capture_output

from llm_magic.ipython.cell_output import StreamDisplay, in_notebook
from llm_magic.rendering import answer_html, render_markdown


def test_notebook_display_is_throttled_and_final_text_complete(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start()
        t0 = time.monotonic()
        for i in range(3000):
            view.add(f"t{i} ")
            if i % 100 == 0:
                time.sleep(0.01)
        elapsed = time.monotonic() - t0
        view.finish(marker="⏱ timed out after 1 s — partial answer, 3000 tokens")
    assert len(captured.outputs) == view.n_updates + 1  # the first display, then each update
    assert view.n_updates <= 25 * elapsed + 2, (view.n_updates, elapsed)  # interim updates + the final one
    assert view.n_updates >= 3  # it did update while streaming
    assert view.n_updates < 3000 / 10  # far fewer than the chunks
    sent = [o.data for o in captured.outputs]
    assert sent[0] == {"text/plain": "▌"}
    assert sent[1] == {"text/plain": "t0 ▌"}  # the first token goes out at once
    for before, interim in pairwise(sent[1:-1]):
        assert set(interim) == {"text/plain"} and interim["text/plain"].endswith("▌")
        assert interim["text/plain"].startswith(before["text/plain"][:-1])  # it only grows
    final = sent[-1]
    text = "".join(f"t{i} " for i in range(3000))
    assert set(final) == {"text/plain", "text/html"}  # no text/markdown any more
    assert final["text/plain"] == text + "\n\n[⏱ timed out after 1 s — partial answer, 3000 tokens]"
    assert final["text/html"] == answer_html(text, "⏱ timed out after 1 s — partial answer, 3000 tokens")
    assert "▌" not in final["text/html"] and "t2999" in final["text/html"]


def test_final_html_is_rendered_with_html_escaped(shell):
    view = StreamDisplay(mode="notebook")
    answer = "**bold** <img src=x onerror=alert(1)> <script>alert(1)</script>\n\n```\n<b>code</b>\n```"
    with capture_output() as captured:
        view.start()
        view.add(answer)
        view.finish(marker="<i>marker</i>")
    final = captured.outputs[-1].data
    assert final["text/plain"].startswith(answer)  # the raw text stays for copy and plain front ends
    html = final["text/html"]
    assert html == render_markdown(answer) + '<hr><p class="llm-magic-marker"><em>&lt;i&gt;marker&lt;/i&gt;</em></p>'
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and "<script" not in html and "<i>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;code&lt;/b&gt;" in html


def test_text_format_sends_no_html(shell):
    view = StreamDisplay(mode="notebook", markdown=False)
    with capture_output() as captured:
        view.start()
        view.add("**bold**")
        view.finish()
    assert captured.outputs[-1].data == {"text/plain": "**bold**"}


def test_status_shows_until_the_first_token(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start(status="loading tiny.gguf")
        view.status("waiting for the model to load")
        view.add("hi")
        view.status("too late: text is showing")
        view.finish()
    sent = [o.data["text/plain"] for o in captured.outputs]
    assert sent == ["loading tiny.gguf", "[waiting for the model to load]", "hi▌", "hi"]


def test_text_mode_writes_chunks_and_the_marker():
    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    view.start(status="loading")
    view.add("Hello")
    view.add(", world")
    view.status("ignored in text mode")
    view.finish(marker="… stopped at max_tokens (2 tokens)")
    assert out.getvalue() == "[loading]\nHello, world\n[… stopped at max_tokens (2 tokens)]\n"
    assert view.n_updates == 0


def test_text_mode_final_text_completes_or_replaces_what_was_shown():
    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    view.add("Hello")
    view.finish(final_text="Hello, world")
    assert out.getvalue() == "Hello, world\n"
    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    view.add("draft")
    view.finish(final_text="other", marker="⚠ boom")
    assert out.getvalue() == "draft\nother\n[⚠ boom]\n"


def test_mode_auto_follows_the_shell(shell):
    assert not in_notebook(shell) and StreamDisplay().mode == "text"
    assert in_notebook(types.SimpleNamespace(kernel=object()))
    assert not in_notebook()  # get_ipython() is the test shell: a terminal, no kernel
