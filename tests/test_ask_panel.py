"""llm_magic.ask_panel: AskPanel's widget logic with a recording comm and the tiny real model."""

from __future__ import annotations

import datetime
import html
import re
import threading
import time
from itertools import pairwise

import pytest

import llm_magic
from llm_magic import runtime, specs
from llm_magic.answer import Answer
from llm_magic.ask_panel import AskPanel
from llm_magic.rendering import answer_html, interim_html, render_markdown

CRAFTED = [
    'Hello <img src=x onerror="window.__pwned=1"> and ',
    "<script>window.__pwned=1</script> **bold** [x](javascript:alert(1))",
]


@pytest.fixture(autouse=True)
def _recording(recording_comm):
    """Every widget of these tests talks to a ``RecordingComm`` (conftest)."""


def make_panel(**kw) -> AskPanel:
    kw.setdefault("temperature", 0.0)
    return AskPanel(**kw)


def wait_for(cond, timeout: float = 10.0, step: float = 0.005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def status_text(panel: AskPanel) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", panel.status.value))


class CraftedStream:
    """A stream-like object that yields chosen chunks: drives the renderer without a model."""

    model_name = "crafted"
    prompt = "crafted"
    phase = "generate"

    def __init__(self, pieces, delay: float = 0.05):
        self.pieces, self.delay, self.answer = pieces, delay, None
        self.stopped = threading.Event()

    def consume(self, on_chunk):
        for p in self.pieces:
            if self.stopped.is_set():
                break
            on_chunk(p)
            time.sleep(self.delay)
        self.answer = Answer("".join(self.pieces), n_tokens=len(self.pieces), model="crafted")
        return self.answer

    def stop(self, reason="cancelled"):
        self.stopped.set()


# ---- building ---------------------------------------------------------------------------------


def test_parts_and_model_list(use_model, tiny_model, tiny_model_b, chat_model):
    llm_magic.current_settings().models = {"b": {"path": tiny_model_b}, "ghost": {"path": "/nonexistent/ghost.gguf"}}
    llm_magic.preload(tiny_model)
    runtime.get().cache.get(specs.resolve(tiny_model))
    panel = make_panel(max_tokens=77, timeout=9, prompt="hi")
    import ipywidgets as w

    assert isinstance(panel, w.Box)
    assert isinstance(panel.prompt, w.Textarea) and panel.prompt.value == "hi"
    assert isinstance(panel.model, w.Dropdown)
    assert isinstance(panel.ask_button, w.Button) and isinstance(panel.stop_button, w.Button)
    assert panel.max_tokens.value == 77 and panel.timeout.value == 9 and panel.temperature.value == 0
    assert panel.answer is None and panel.running is False and panel.history == []
    assert not panel.ask_button.disabled and panel.stop_button.disabled
    labels = {v: label for label, v in panel.model.options}
    assert labels[tiny_model] == "default · tiny.gguf — ready"
    assert labels["b"] == "b (tiny-b.gguf) — not loaded"
    assert labels["ghost"] == "ghost — missing"
    assert panel.model.value == tiny_model
    assert "tiny.gguf: ready" in status_text(panel)
    panel.model.value = "ghost"
    assert "model file not found" in status_text(panel)
    # a loaded model that is neither the default nor an alias is listed too; an alias and its path once
    llm_magic.preload(chat_model, tiny_model_b)
    panel.refresh_models()
    values = [v for _, v in panel.model.options]
    assert values == [tiny_model, "b", "ghost", chat_model]
    assert panel.model.value == "ghost"  # the selection survives a refresh
    panel.close()


def test_show_and_magic_display_the_panel(ip):
    from IPython.utils.capture import capture_output

    import llm_magic.ask_panel  # importing the module must not break llm_magic.panel()

    for _ in range(2):
        with capture_output() as cap:
            p = llm_magic.panel(max_tokens=5)
        assert isinstance(p, AskPanel) and p.max_tokens.value == 5
        [shown] = cap.outputs  # the panel was displayed, once
        assert shown.data["application/vnd.jupyter.widget-view+json"]["model_id"] == p.model_id
        p.close()
    assert llm_magic.AskPanel is AskPanel  # importable lazily from the package
    with pytest.raises(llm_magic.ConfigError, match="unknown panel option"):
        llm_magic.panel(max_token=5)
    with capture_output() as cap:
        ip.run_cell("%llm panel")
    [output] = cap.outputs
    assert "application/vnd.jupyter.widget-view+json" in output.data


# ---- streaming --------------------------------------------------------------------------------


def test_click_returns_at_once_streams_and_is_throttled(use_model):
    # generate for 3 s at the tiny model's full speed (hundreds of tokens/s on an idle machine)
    panel = make_panel(max_tokens=100000, timeout=3)
    values = panel.answer_area.comm.values
    panel.prompt.value = "Tell me a story"
    t0 = time.monotonic()
    panel.ask_button.click()
    click_s = time.monotonic() - t0
    assert click_s < 0.2, click_s
    assert panel.running and panel.ask_button.disabled and not panel.stop_button.disabled
    # updates arrive while it generates
    assert wait_for(lambda: len(values()) >= 3 and panel.running, timeout=20), (len(values()), panel.running)
    interim = values()[-1][1]
    assert "▌" in interim  # the cursor: still streaming
    answer = panel.wait(30)
    elapsed = time.monotonic() - t0
    assert answer is panel.answer and answer.finish_reason == "timeout"
    assert not panel.running and not panel.ask_button.disabled and panel.stop_button.disabled
    assert panel.history == [("Tell me a story", answer)]
    # throttled: at most 30/s (+ the first and the final), far fewer updates than tokens
    sent = values()
    assert len(sent) == panel.n_updates
    assert len(sent) <= 30 * elapsed + 2, (len(sent), elapsed)
    if (answer.tokens_per_s or 0) >= 100:  # the usual case; a machine crushed by other work may not get there
        assert answer.n_tokens > 2 * len(sent), (answer.n_tokens, len(sent), answer.tokens_per_s)
    else:
        import warnings

        warnings.warn(
            f"the tiny model ran at {answer.tokens_per_s} tokens/s only: the throttle was barely exercised",
            stacklevel=1,
        )
    times = [t for t, _ in sent]
    gaps = [b - a for a, b in pairwise(times)]
    # the first gap: the cursor shown on Ask, then the first token at once; the last: the final view
    assert sent[0][1] == interim_html("") and min(gaps[1:-1]) >= 1 / 30 - 0.002, min(gaps)
    # the final text is complete: every token, rendered, with the partial-answer marker and where
    # the time went
    assert sent[-1][1] == answer_html(answer.text, answer.marker(), note=answer.time_report)
    assert sent[-1][1] == panel.answer_area.value and answer.time_report
    assert sent[-1][1].startswith(render_markdown(answer.text)) and "▌" not in sent[-1][1]
    assert "timed out after 3 s — partial answer" in sent[-1][1]
    status = status_text(panel)
    assert f"{answer.n_tokens} tokens" in status and "tokens/s" in status and "first token" in status
    assert "finish: timeout" in status
    # and a complete answer (max_tokens reached)
    panel.max_tokens.value, panel.timeout.value = 50, 60
    panel.ask_button.click()
    answer = panel.wait(60)
    assert answer.finish_reason == "length" and answer.n_tokens == 50
    assert panel.answer_area.value == answer_html(answer.text, answer.marker())
    assert panel.answer_area.value.startswith(render_markdown(answer.text))
    assert "stopped at max_tokens (50 tokens)" in panel.answer_area.value
    assert "finish: length" in status_text(panel) and len(panel.history) == 2
    panel.close()


def test_stop_cancels_within_a_token(use_model):
    panel = make_panel(max_tokens=100000, timeout=60)
    panel.ask("Talk forever")
    assert wait_for(lambda: len(panel._pieces) > 20, timeout=20)
    at_stop = len(panel._pieces)
    t0 = time.monotonic()
    panel.stop_button.click()
    answer = panel.wait(5)
    assert time.monotonic() - t0 < 1.0
    assert answer.finish_reason == "cancelled"
    assert answer.n_tokens - at_stop <= 3, (answer.n_tokens, at_stop)  # a token or two in flight
    assert "cancelled — partial answer" in panel.answer_area.value
    assert "finish: cancelled" in status_text(panel)
    assert not panel.running and not panel.ask_button.disabled and panel.stop_button.disabled
    # the model is free again: the next ask works
    panel.max_tokens.value = 5
    panel.ask("Again")
    assert panel.wait(20).finish_reason == "length"
    assert len(panel.history) == 2
    panel.close()


def test_timeout_gives_a_marked_partial_answer(use_model):
    panel = make_panel(max_tokens=100000, timeout=1.5)
    panel.ask("Talk forever")
    answer = panel.wait(20)
    assert answer.finish_reason == "timeout" and answer.text and answer.n_tokens > 0
    assert "timed out after 1.5 s — partial answer" in panel.answer_area.value
    assert render_markdown(answer.text) in panel.answer_area.value
    assert "finish: timeout" in status_text(panel)
    # where the time went, subdued under the answer (as the cell shows it)
    assert answer.time_report and "prompt evaluation" in answer.time_report
    assert panel.answer_area.value == answer_html(answer.text, answer.marker(), note=answer.time_report)
    panel.close()


def test_loading_status_ticks_while_the_model_loads(use_model, monkeypatch):
    from llm_magic import cache

    real = cache.load_engine

    def slow_loader(spec, abort=None):
        time.sleep(2.3)
        return real(spec, abort)

    monkeypatch.setattr(cache, "load_engine", slow_loader)
    llm_magic.preload()
    panel = make_panel(max_tokens=5, timeout=30)
    status = panel.status.comm.values
    assert "loading (0 s)" in status_text(panel)
    # the idle panel's status ticks while the preload runs, then says ready
    assert wait_for(lambda: "ready" in status_text(panel), timeout=10)
    seen = [v for _, v in status() if "loading (" in v]
    assert any("loading (1 s)" in v for v in seen) and any("loading (2 s)" in v for v in seen), seen
    assert wait_for(lambda: "— ready" in panel.model.options[0][0], timeout=5)  # the dropdown label follows
    # and during an ask that has to wait for a load
    llm_magic.unload(all=True)
    n_before = len(status())
    panel.ask("Hi")
    answer = panel.wait(20)
    assert answer.finish_reason == "length" and answer.load_wait_s > 2
    seen = [v for _, v in status()[n_before:] if "loading (" in v]
    assert any("loading (1 s)" in v for v in seen) and any("loading (2 s)" in v for v in seen), seen
    panel.close()


# ---- errors -----------------------------------------------------------------------------------


def test_no_model_configured_shows_in_status(monkeypatch):
    monkeypatch.setattr(specs.default_model, "is_installed", lambda: False)
    panel = make_panel()
    assert panel.model.options == ()
    assert "no model configured" in status_text(panel)
    panel.prompt.value = "hi"
    assert panel.ask() is None
    assert "no model configured" in status_text(panel) and not panel.running
    panel.close()


def test_missing_file_failed_load_and_bad_options_show_in_status(use_model, corrupt_files):
    bad = next(iter(corrupt_files.values()))
    llm_magic.current_settings().models = {"ghost": {"path": "/nonexistent/ghost.gguf"}, "broken": {"path": str(bad)}}
    panel = make_panel(max_tokens=5)
    panel.prompt.value = "hi"
    panel.model.value = "ghost"
    panel.ask_button.click()
    assert "model file not found: /nonexistent/ghost.gguf" in status_text(panel)
    assert not panel.running and not panel.ask_button.disabled
    # a file llama.cpp cannot load: the error comes from the worker and lands in the panel
    panel.model.value = "broken"
    panel.ask_button.click()
    answer = panel.wait(20)
    assert answer.finish_reason == "error" and answer.error
    assert answer.error[:40] in status_text(panel) and "✖" in status_text(panel)
    assert "— failed" in {v: label for label, v in panel.model.options}["broken"]
    assert not panel.running and not panel.ask_button.disabled and panel.stop_button.disabled
    # bad options
    panel.model.value = specs.default_model_name()
    panel.timeout.value = 0
    panel.ask_button.click()
    assert "timeout must be a positive number" in status_text(panel)
    panel.timeout.value, panel.temperature.value = 10, -1
    panel.ask_button.click()
    assert "temperature must be >= 0" in status_text(panel)
    panel.temperature.value, panel.max_tokens.value = 0, 0
    panel.ask_button.click()
    assert "max_tokens must be a positive integer" in status_text(panel)
    panel.max_tokens.value, panel.prompt.value = 5, "  "
    n_history = len(panel.history)
    panel.ask_button.click()
    # said in the panel's own words (the request's message is about cells and %ask)
    assert status_text(panel) == "✖ the prompt is empty: type a question above"
    assert panel.ask(" \n\t") is None and "type a question above" in status_text(panel)
    assert not panel.running and len(panel.history) == n_history
    panel.close()


# ---- sharing, closing -------------------------------------------------------------------------


def test_two_panels_on_one_model_take_turns(use_model):
    a, b = make_panel(max_tokens=150, timeout=150), make_panel(max_tokens=150, timeout=150)
    got = {a: [], b: []}
    for p in (a, b):
        real = p._on_chunk
        p._on_chunk = lambda stream, chunk, p=p, real=real: (
            chunk is not None and got[p].append((time.monotonic(), chunk)),  # None: a status event
            real(stream, chunk),
        )
    a.ask("Tell me a story")
    b.ask("Tell me a story")
    assert b.running
    ra, rb = a.wait(150), b.wait(150)
    assert ra.finish_reason == rb.finish_reason == "length" and ra.n_tokens == rb.n_tokens == 150
    # greedy, same prompt, no interleaving: the same text, each exactly its own chunks
    assert ra.text == rb.text == "".join(c for _, c in got[a]) == "".join(c for _, c in got[b])
    # they queued on the model's lock: one finished before the other's first token
    first, second = sorted((got[a], got[b]), key=lambda g: g[0][0])
    assert first[-1][0] <= second[0][0]
    assert render_markdown(ra.text) in a.answer_area.value and render_markdown(rb.text) in b.answer_area.value
    a.close()
    b.close()


def test_a_wait_for_a_busy_model_is_shown_apart_from_the_first_token(use_model):
    a, b = make_panel(max_tokens=100000, timeout=60), make_panel(max_tokens=5, timeout=60)
    a.ask("Talk forever")
    assert wait_for(lambda: len(a._pieces) > 5, timeout=20)
    b.ask("Hi")
    assert wait_for(lambda: "waiting for the model (busy" in status_text(b), timeout=10), status_text(b)
    time.sleep(1.0)  # b waits at least this long after it was seen waiting
    a.stop()
    ra, rb = a.wait(10), b.wait(30)
    assert ra.finish_reason == "cancelled" and rb.finish_reason == "length"
    status = status_text(b)
    m = re.search(r"· waited ([\d.]+) s for the model · first token ([\d.]+) s ·", status)
    assert m, status
    waited, first = float(m[1]), float(m[2])
    assert waited >= 1.0 and first < waited, status
    assert abs(waited + first - rb.ttft_s) <= 0.06, (waited, first, rb.ttft_s)  # they add up (rounded)
    assert abs(waited - rb.queue_s) <= 0.06, (waited, rb.queue_s)  # measured by the request, not guessed
    assert abs(first - rb.prompt_s) <= 0.03, (first, rb.prompt_s)  # from getting the model to the first token
    # the one that held the model did not wait for it (it may have waited for the load)
    assert "for the model" not in status_text(a) and "first token" in status_text(a)
    a.close()
    b.close()


def test_status_counts_the_prompt_batches(use_model, tiny_model):
    # a long prompt is evaluated batch by batch: the status line says how far, in the cell's words
    llm_magic.current_settings().models = {"small-batch": {"path": tiny_model, "n_batch": 32}}
    llm_magic.preload("small-batch")
    runtime.get().cache.get(specs.resolve("small-batch"))

    class Unthrottled(AskPanel):  # the tiny model reads a batch in well under 1/25 s: see every one
        MAX_UPDATES_PER_S = 100_000

    panel = Unthrottled(model="small-batch", max_tokens=3, timeout=60, temperature=0.0)
    values = panel.status.comm.values
    n0 = len(values())
    panel.ask(" ".join(f"word{i}" for i in range(200)))
    answer = panel.wait(60)
    assert answer.finish_reason == "length" and answer.n_prompt_evaluated > 4 * 32, answer.n_prompt_evaluated
    shown = [html.unescape(re.sub(r"<[^>]+>", "", v)) for _, v in values()[n0:]]
    counts = [re.search(r"reading the prompt ([\d,]+) / ([\d,]+) tokens", v) for v in shown]
    counts = [(int(m[1].replace(",", "")), int(m[2].replace(",", ""))) for m in counts if m]
    assert counts, shown
    assert {total for _, total in counts} == {answer.n_prompt_evaluated}
    done = [d for d, _ in counts]
    assert done == sorted(done) and len(set(done)) >= 3, done  # it moved on, batch by batch
    assert answer.n_prompt_evaluated - 32 <= done[-1] <= answer.n_prompt_evaluated, done
    panel.close()


def test_the_answer_area_is_never_empty_and_keeps_line_breaks():
    panel = make_panel()
    panel.show_answer("an earlier answer")
    values = panel.answer_area.comm.values
    n0 = len(values())
    panel.start(CraftedStream(["first line\n", "second line\n", "third line"], delay=0.1))
    answer = panel.wait(5)
    sent = [v for _, v in values()[n0:]]
    # the cursor replaces the earlier answer, tokens follow, and the final view replaces the
    # streamed one in one update: no empty frame anywhere
    assert sent[0] == interim_html("") and all(v.strip() for v in sent), sent
    assert any("first line<br" in v and "▌" in v for v in sent[:-1]), sent  # while streaming
    assert sent[-1] == answer_html(answer.text, answer.marker()) and sent[-1].count("<br") == 2
    # an answer with no text at all still shows something
    panel.start(CraftedStream([]))
    panel.wait(5)
    assert panel.answer_area.value == answer_html("", None) and panel.answer_area.value.strip()
    assert all(v.strip() for _, v in values()[n0:])
    panel.close()


def test_close_while_streaming_stops_the_generation(use_model):
    panel = make_panel(max_tokens=100000, timeout=60)
    panel.ask("Talk forever")
    assert wait_for(lambda: len(panel._pieces) > 10, timeout=20)
    future = panel.future
    t0 = time.monotonic()
    panel.close()
    assert future.result(timeout=5).finish_reason == "cancelled"
    assert time.monotonic() - t0 < 1.0
    assert panel.closed and panel.comm is None and panel.answer_area.comm is None
    assert panel.answer.finish_reason == "cancelled" and not panel.running
    assert panel.ask("again") is None  # a closed panel does nothing
    # the model is free for others
    assert llm_magic.ask("hi", max_tokens=3, timeout=10).finish_reason == "length"


def test_cleanup_models_while_streaming_stops_it(use_model):
    panel = make_panel(max_tokens=100000, timeout=60)
    panel.ask("Talk forever")
    assert wait_for(lambda: len(panel._pieces) > 10, timeout=20)
    t0 = time.monotonic()
    llm_magic.cleanup_models()
    assert panel.wait(5).finish_reason == "cancelled"
    assert time.monotonic() - t0 < 3.0
    assert not panel.running and not panel.ask_button.disabled and panel.stop_button.disabled
    ours = ("llm_magic-gen", "llm_magic-panel", "llm_magic-load")
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith(ours)], timeout=5), [
        t.name for t in threading.enumerate()
    ]
    # the panel still works afterwards (the model loads again)
    panel.max_tokens.value = 3
    panel.ask("again")
    assert panel.wait(20).finish_reason == "length"
    panel.close()


# ---- untrusted output -------------------------------------------------------------------------


def test_untrusted_html_is_escaped_while_streaming_and_at_the_end():
    panel = make_panel()
    panel.start(CraftedStream(CRAFTED, delay=0.1))
    answer = panel.wait(5)
    assert answer == "".join(CRAFTED)
    sent = [v for _, v in panel.answer_area.comm.values()]
    assert len(sent) >= 2  # an interim and the final update
    for value in sent:
        assert "<img" not in value and "<script" not in value and 'href="javascript' not in value
    final = sent[-1]
    assert "&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;" in final
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in final
    assert "<strong>bold</strong>" in final  # Markdown still renders
    # status text from errors is escaped as well
    panel._show_error("<b>bad</b>")
    assert "<b>" not in panel.status.value and "&lt;b&gt;" in panel.status.value
    panel.close()


# ---- vision (issue 6) -----------------------------------------------------------------------------


def test_panel_offers_an_image_upload_for_vision_models(tmp_path, tiny_model):
    from tiny_vision_gguf import png_bytes, write_tiny_vision_pair

    text, mmproj = write_tiny_vision_pair(tmp_path)
    llm_magic.current_settings().models = {
        "vis": {"path": str(text), "mmproj": str(mmproj), "n_ctx": 512, "n_threads": 1},
        "plain": {"path": tiny_model},
    }
    panel = make_panel(model="plain", max_tokens=4, timeout=30)
    assert panel.image.layout.display == "none"  # a text-only model: no upload
    panel.model.value = "vis"
    assert panel.image.layout.display != "none"
    png = png_bytes(20, 20)
    panel.image.value = (
        {
            "name": "p.png",
            "type": "image/png",
            "size": len(png),
            "content": memoryview(png),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        },
    )
    panel.ask("What is in the picture?")
    answer = panel.wait(30)
    assert answer.finish_reason == "length" and answer.n_tokens == 4
    assert answer.n_prompt_tokens > 16  # the image's 16 tokens are in the prompt
    bad = b"not an image at all"
    panel.image.value = (
        {
            "name": "x.png",
            "type": "image/png",
            "size": len(bad),
            "content": memoryview(bad),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        },
    )
    assert panel.ask("again") is None
    assert "not an image" in status_text(panel)
    panel.close()
