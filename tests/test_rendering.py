"""llm_magic.rendering: the one sanitizer for model output (render_markdown, answer_html) and Throttle."""

from __future__ import annotations

from itertools import pairwise

from llm_magic.rendering import MAX_UPDATES_PER_S, Throttle, answer_html, marker_html, render_markdown


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


def test_answer_html_adds_an_escaped_marker():
    assert answer_html("") == "" and answer_html("", "m") == marker_html("m")
    assert answer_html("*x*") == render_markdown("*x*")
    assert answer_html("*x*", "⏹ cancelled — <b>partial</b>") == (
        render_markdown("*x*") + '<hr><p class="llm-magic-marker"><em>⏹ cancelled — &lt;b&gt;partial&lt;/b&gt;</em></p>'
    )


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
