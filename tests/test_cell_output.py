"""llm_magic.ipython.cell_output: StreamDisplay, the answer streaming into a cell's output."""

from __future__ import annotations

import io
import time
import types
from itertools import pairwise

from IPython.utils.capture import capture_output

from llm_magic.ipython.cell_output import StreamDisplay, in_notebook
from llm_magic.rendering import answer_html, interim_html, render_markdown, status_html

TIMED_OUT = "timed out after 1 s — partial answer, 3000 tokens"


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
        view.finish(marker=TIMED_OUT, note="waiting for the model load 0.00 s")
    assert len(captured.outputs) == view.n_updates + 1  # the first display, then each update
    assert view.n_updates <= 25 * elapsed + 2, (view.n_updates, elapsed)  # interim updates + the final one
    assert view.n_updates >= 3  # it did update while streaming
    assert view.n_updates < 3000 / 10  # far fewer than the chunks
    sent = [o.data for o in captured.outputs]
    assert sent[0] == {"text/plain": "▌", "text/html": "<p>▌</p>\n"}  # the first display: the cursor
    assert sent[1] == {"text/plain": "t0 ▌", "text/html": interim_html("t0 ")}  # the first token at once
    for before, interim in pairwise(sent[1:-1]):
        # interim updates: the same renderer as the final view, with a plain-text fallback
        assert set(interim) == {"text/plain", "text/html"} and interim["text/plain"].endswith("▌")
        assert interim["text/plain"].startswith(before["text/plain"][:-1])  # it only grows
        assert interim["text/html"] == interim_html(interim["text/plain"][:-1])
    final = sent[-1]
    text = "".join(f"t{i} " for i in range(3000))
    assert set(final) == {"text/plain", "text/html"}  # no text/markdown: the HTML is ours, sanitized
    assert final["text/plain"] == text + f"\n\n[{TIMED_OUT}]\n[waiting for the model load 0.00 s]"
    assert final["text/html"] == answer_html(text, TIMED_OUT, note="waiting for the model load 0.00 s")
    assert "▌" not in final["text/html"] and "t2999" in final["text/html"]
    assert all(o.data and all(o.data.values()) for o in captured.outputs)  # never an empty frame


def test_line_breaks_look_the_same_while_streaming_and_at_the_end(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start()
        for chunk in ("By: Mark L. Brown", "\n", "This cat sat."):
            view.throttle.reset()  # every chunk shown
            view.add(chunk)
        view.finish()
    interim, final = captured.outputs[-2].data["text/html"], captured.outputs[-1].data["text/html"]
    assert interim == "<p>By: Mark L. Brown<br />\nThis cat sat.▌</p>\n"
    assert final == "<p>By: Mark L. Brown<br />\nThis cat sat.</p>\n" == interim.replace("▌", "")


def test_expensive_rendering_sends_fewer_updates(shell, monkeypatch):
    """Rendering that takes 20 ms holds the next update back 5 x that (100 ms), not 40 ms."""
    import llm_magic.ipython.cell_output as cell_output

    monkeypatch.setattr(cell_output, "interim_html", lambda text: (time.sleep(0.02), f"<p>{len(text)}</p>")[1])
    view = StreamDisplay(mode="notebook")
    with capture_output():
        view.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            view.add("x")
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        view.finish()
    assert 3 <= view.n_updates - 1 <= elapsed / 0.1 + 2, view.n_updates


def test_final_html_is_rendered_with_html_escaped(shell):
    view = StreamDisplay(mode="notebook")
    answer = "**bold** <img src=x onerror=alert(1)> <script>alert(1)</script>\n\n```\n<b>code</b>\n```"
    with capture_output() as captured:
        view.start()
        view.add(answer)
        view.finish(marker="<i>marker</i>")
    interim = captured.outputs[-2].data["text/html"]
    assert "<img" not in interim and "<script" not in interim and "&lt;script&gt;" in interim
    final = captured.outputs[-1].data
    assert final["text/plain"].startswith(answer)  # the raw text stays for copy and plain front ends
    html = final["text/html"]
    assert (
        html
        == render_markdown(answer)
        + '<hr><p class="llm-magic-marker" style="opacity:0.7">[&lt;i&gt;marker&lt;/i&gt;]</p>'
    )
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and "<script" not in html and "<i>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;code&lt;/b&gt;" in html


def test_text_format_sends_no_html(shell):
    view = StreamDisplay(mode="notebook", markdown=False)
    with capture_output() as captured:
        view.start(status="loading")
        view.add("**bold**")
        view.finish(marker="stopped at max_tokens (1 token)")
    assert [o.data for o in captured.outputs] == [
        {"text/plain": "[loading]"},
        {"text/plain": "**bold**▌"},
        {"text/plain": "**bold**\n\n[stopped at max_tokens (1 token)]"},
    ]


def test_status_shows_until_the_first_token(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start(status="loading tiny.gguf")
        view.status("waiting for the model to load")
        view.add("hi")
        view.status("too late: text is showing")
        view.finish()
    sent = [o.data["text/plain"] for o in captured.outputs]
    assert sent == ["[loading tiny.gguf]", "[waiting for the model to load]", "hi▌", "hi"]
    assert captured.outputs[1].data["text/html"] == status_html("waiting for the model to load")


def test_prompt_progress_is_throttled_and_the_first_token_still_goes_out_at_once(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start()
        for done in range(0, 4461, 32):  # batches faster than 25 a second: most are held back
            view.status(f"reading the prompt {done:,} / 4,461 tokens")
        time.sleep(view.throttle.interval + 0.02)
        view.status("reading the prompt 4,461 / 4,461 tokens")  # after the interval: shown
        view.add("A")  # right after a status: not held back
        view.finish()
    sent = [o.data["text/plain"] for o in captured.outputs]
    assert sent == [
        "▌",
        "[reading the prompt 0 / 4,461 tokens]",
        "[reading the prompt 4,461 / 4,461 tokens]",
        "A▌",
        "A",
    ]


def test_empty_answer_says_so(shell):
    view = StreamDisplay(mode="notebook")
    with capture_output() as captured:
        view.start()
        view.add("\n\n")
        view.finish()
    final = captured.outputs[-1].data
    assert final == {"text/plain": "[empty answer]", "text/html": answer_html("\n\n")}
    assert "[empty answer]" in final["text/html"]
    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    view.add("  ")
    view.finish()
    assert out.getvalue() == "  \n[empty answer]\n"


def test_text_mode_writes_chunks_the_marker_and_the_notes():
    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    view.start(status="loading")
    view.add("Hello")
    view.add(", world")
    view.status("ignored in text mode")
    view.finish(marker="timed out after 1 s — partial answer, 2 tokens", note=["waiting for the model load 0.00 s"])
    assert out.getvalue() == (
        "[loading]\nHello, world\n[timed out after 1 s — partial answer, 2 tokens]\n[waiting for the model load 0.00 s]\n"
    )
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
    view.finish(final_text="other", marker="error — boom")
    assert out.getvalue() == "draft\nother\n[error — boom]\n"


def test_mode_auto_follows_the_shell(shell):
    assert not in_notebook(shell) and StreamDisplay().mode == "text"
    assert in_notebook(types.SimpleNamespace(kernel=object()))
    assert not in_notebook()  # get_ipython() is the test shell: a terminal, no kernel


def test_rendered_streaming_is_gentler_than_plain_text():
    """Each HTML update is rendered on the generating thread: 10/s (plain text: 25/s)."""
    from llm_magic.rendering import CELL_HTML_UPDATES_PER_S, MAX_UPDATES_PER_S

    assert StreamDisplay(mode="notebook").throttle.interval == 1 / CELL_HTML_UPDATES_PER_S == 0.1
    assert StreamDisplay(mode="notebook", markdown=False).throttle.interval == 1 / MAX_UPDATES_PER_S
    assert StreamDisplay(mode="notebook", max_updates_per_s=5).throttle.interval == 0.2


def test_text_mode_needs_only_write():
    """Terminal mode writes to any object with write() (a redirect, a capture): never writelines()."""

    class Sink:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, s: str) -> int:
            self.parts.append(s)
            return len(s)

        def flush(self) -> None:
            pass

    sink = Sink()
    view = StreamDisplay(mode="text", out=sink)
    view.add("Paris")
    view.finish(marker="stopped at max_tokens (1 token)", note="a note")
    assert "".join(sink.parts) == "Paris\n[stopped at max_tokens (1 token)]\n[a note]\n"
