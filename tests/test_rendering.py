"""llm_magic.rendering: the one sanitizer for model output (render_markdown, interim_html,
answer_html), the one form of the lines about an answer (marker, notes, "empty answer", status,
in HTML and plain text alike) and Throttle."""

from __future__ import annotations

from itertools import pairwise

import pytest

from llm_magic.rendering import (
    CURSOR,
    MAX_UPDATES_PER_S,
    Throttle,
    about_lines,
    answer_html,
    answer_text,
    interim_html,
    marker_html,
    note_html,
    render_markdown,
    status_html,
)

SUBDUED = 'style="opacity:0.7"'


def test_markdown_escapes_html_and_javascript_links_but_keeps_code():
    evil = "Hi <img src=x onerror=alert(1)> <script>x()</script> [a](javascript:alert(1)) `<b>` \n```\n<i>\n```"
    safe = render_markdown(evil)
    assert "<img" not in safe and "<script" not in safe and 'href="javascript:' not in safe
    assert "&lt;img src=x onerror=alert(1)&gt;" in safe and "&lt;script&gt;x()&lt;/script&gt;" in safe
    assert "<code>&lt;b&gt;</code>" in safe  # inline code: kept, as text
    assert "<pre><code>&lt;i&gt;\n</code></pre>" in safe  # a fenced block too


def test_render_markdown_is_safe():
    out = render_markdown(
        '<img src=x onerror="alert(1)"> ![i](http://tracker/x.png) [a](javascript:alert(1)) '
        '<a href="javascript:x">y</a> [d](data:text/html;base64,PHNjcmlwdD4=)'
        "\n\n```html\n<script>x</script>\n```"
    )
    assert "<img" not in out and "<script" not in out and '<a href="javascript' not in out
    assert "data:text" not in out.replace("[d](data:text", "")  # the data: link is not a link
    assert '!<a href="http://tracker/x.png">i</a>' in out  # an image is only a link: never loaded
    assert "&lt;script&gt;" in out and '<code class="language-html">' in out


def test_markdown_still_renders():
    out = render_markdown(
        "# Title\n\n**bold** *it* ~~gone~~ [ok](https://example.org)\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )
    for tag in (
        "<h1>Title</h1>",
        "<strong>bold</strong>",
        "<em>it</em>",
        "<s>gone</s>",
        '<a href="https://example.org">ok</a>',
        "<table>",
        "<td>1</td>",
    ):
        assert tag in out


def test_single_line_breaks_are_kept_as_the_stream_showed_them():
    out = render_markdown("By: Mark L. Brown\nThis cat sat.\n\nNew paragraph.\n```\na\nb\n```")
    assert out.startswith("<p>By: Mark L. Brown<br />\nThis cat sat.</p>\n<p>New paragraph.</p>")
    assert "<pre><code>a\nb\n</code></pre>" in out  # code keeps its lines, with no <br> added


def test_interim_html_is_the_final_renderer_with_the_cursor():
    assert interim_html("") == "<p>▌</p>\n"  # never an empty frame: the cursor shows
    assert interim_html("**bold** and\nmore") == render_markdown("**bold** and\nmore" + CURSOR)
    assert interim_html("<script>x</script>") == "<p>&lt;script&gt;x&lt;/script&gt;▌</p>\n"
    # what was there keeps its shape as the answer grows (no jump at the end)
    assert interim_html("# Title\n\ntext").startswith(answer_html("# Title\n\ntext").split("<p>")[0])


def test_answer_html_adds_an_escaped_marker():
    assert answer_html("*x*") == render_markdown("*x*")
    assert marker_html("m") == f'<hr><p class="llm-magic-marker" {SUBDUED}>[m]</p>'
    assert answer_html("*x*", "cancelled — <b>partial</b>") == (
        render_markdown("*x*")
        + f'<hr><p class="llm-magic-marker" {SUBDUED}>[cancelled — &lt;b&gt;partial&lt;/b&gt;]</p>'
    )


def test_a_note_goes_under_the_marker_subdued_and_escaped():
    note = "waiting for the model load 0.00 s; generation 1.00 s (39 tokens)"
    html = answer_html("text", "timed out after 1 s — partial answer, 39 tokens", note=note)
    assert html == (
        render_markdown("text")
        + marker_html("timed out after 1 s — partial answer, 39 tokens")
        + f'<p class="llm-magic-note" {SUBDUED}>[{note}]</p>'
    )
    assert note_html("<i>x</i>") == f'<p class="llm-magic-note" {SUBDUED}>[&lt;i&gt;x&lt;/i&gt;]</p>'
    assert answer_html("text", None, note="n") == render_markdown("text") + "<hr>" + note_html("n")
    assert answer_html("t", "m", note=["a", "", "b"]) == render_markdown("t") + marker_html("m") + note_html(
        "a"
    ) + note_html("b")
    assert answer_html("t", "m", note=None) == answer_html("t", "m", note=[]) == render_markdown("t") + marker_html("m")


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\n"])
def test_an_answer_with_nothing_to_see_says_empty_answer(text):
    empty = f'<p class="llm-magic-empty" {SUBDUED}>[empty answer]</p>'
    assert answer_html(text) == empty
    assert answer_text(text) == "[empty answer]"
    assert answer_html(text, "stopped at max_tokens (2 tokens)") == (
        (empty if text else "") + marker_html("stopped at max_tokens (2 tokens)")
    )


def test_a_marker_that_says_why_nothing_came_needs_no_empty_answer_line():
    marker = "timed out after 1 s — no token came: the model was still loading after 1.0 s"
    assert answer_html("", marker) == marker_html(marker)
    assert about_lines("", marker) == [f"[{marker}]"]
    assert about_lines("\n", marker) == ["[empty answer]", f"[{marker}]"]  # whitespace came: say so


def test_the_plain_text_form_has_the_same_words_in_the_same_form():
    marker, note = "stopped at max_tokens (128 tokens)", "where it went"
    assert answer_text("Hello") == "Hello"
    assert answer_text("Hello", marker) == f"Hello\n\n[{marker}]"
    assert answer_text("Hello", marker, note) == f"Hello\n\n[{marker}]\n[{note}]"
    assert about_lines("Hello", marker, [note]) == [f"[{marker}]", f"[{note}]"]
    html = answer_html("Hello", marker, note)
    for line in about_lines("Hello", marker, note):  # every line of the text form is in the HTML, as is
        assert f">{line}</p>" in html


def test_status_html_is_subdued_and_escaped():
    assert status_html("reading the prompt 1,024 / 4,461 tokens") == (
        f'<p class="llm-magic-status" {SUBDUED}>[reading the prompt 1,024 / 4,461 tokens]</p>'
    )
    assert "<b>" not in status_html("<b>model</b> loading")


def test_throttle_lets_at_most_max_per_s_through():
    assert MAX_UPDATES_PER_S <= 30
    throttle = Throttle(MAX_UPDATES_PER_S)
    sent = []
    for i in range(1000):  # 1000 chunks over one simulated second
        now = 100 + i / 1000
        if throttle.ready(now):
            throttle.sent(now=now)
            sent.append(now)
    assert MAX_UPDATES_PER_S - 1 <= len(sent) <= MAX_UPDATES_PER_S + 1
    gaps = [b - a for a, b in pairwise(sent)]
    assert min(gaps) >= 1 / MAX_UPDATES_PER_S - 1e-9
    assert throttle.pending  # the chunks after the last update are waiting for the final one


def test_throttle_slows_down_when_rendering_is_expensive_and_resets():
    throttle = Throttle(25, cost_factor=5.0)
    assert throttle.ready(0.0) and not throttle.pending
    throttle.sent(render_s=0.1, now=0.0)  # rendering took 0.1 s: wait 5 x that
    assert not throttle.ready(0.1) and throttle.pending
    assert not throttle.ready(0.49) and throttle.ready(0.5)
    throttle.sent(now=1.0)
    assert not throttle.pending and not throttle.ready(1.01)
    throttle.reset()
    assert throttle.ready(1.01)
