"""llm_magic.answer: ``Answer`` (a str with what happened attached: defaults, ``text``, ``partial``,
``timings()``, pickling, ``repr``), the partial answer's ``marker()`` for every finish reason,
``time_report`` (where a timed-out request's time went) and ``build_answer`` (finish reason
precedence, tokens/s, the count of an answer stopped by us)."""

from __future__ import annotations

import copy
import pickle
import string
import time

import pytest

from llm_magic.answer import FINISH_REASONS, Answer, build_answer, time_report
from llm_magic.engines.base import StreamStats

# ---- Answer -------------------------------------------------------------------------------------


def test_an_answer_is_a_str_with_defaults():
    a = Answer("Paris")
    assert isinstance(a, str) and a == "Paris" and a.upper() == "PARIS" and len(a) == 5
    assert (a.finish_reason, a.n_tokens, a.n_prompt_tokens, a.n_prompt_evaluated) == ("stop", 0, 0, 0)
    assert (a.load_wait_s, a.prompt_s, a.ttft_s, a.total_s, a.tokens_per_s) == (0.0, None, None, 0.0, None)
    assert (a.model, a.error, a.timeout, a.value) == ("", None, None, None)
    assert Answer() == "" and Answer().finish_reason == "stop"


def test_metadata_is_set_and_extra_keys_are_kept():
    a = Answer("x", finish_reason="length", n_tokens=7, model="tiny.gguf", phase="generate", value={"k": 1})
    assert (a.finish_reason, a.n_tokens, a.model) == ("length", 7, "tiny.gguf")
    assert a.phase == "generate" and a.value == {"k": 1}
    assert Answer("y").value is None  # the class default, not shared state


def test_text_is_a_plain_str():
    a = Answer("some text", n_tokens=2)
    assert a.text == "some text" and type(a.text) is str
    assert type(str(a)) is str and str(a) == "some text"
    assert a.text + "!" == "some text!"


@pytest.mark.parametrize(
    ("reason", "partial"),
    [("stop", False), ("length", False), ("timeout", True), ("cancelled", True), ("error", True)],
)
def test_partial(reason, partial):
    assert reason in FINISH_REASONS
    assert Answer("t", finish_reason=reason).partial is partial


def test_timings_lists_the_measured_fields():
    a = Answer(
        "t",
        finish_reason="length",
        n_tokens=3,
        n_prompt_tokens=10,
        n_prompt_evaluated=4,
        load_wait_s=0.5,
        prompt_s=0.25,
        ttft_s=0.8,
        total_s=1.5,
        tokens_per_s=12.0,
        model="m",
        error=None,
        timeout=30.0,
    )
    assert a.timings() == {
        "finish_reason": "length",
        "n_tokens": 3,
        "n_prompt_tokens": 10,
        "n_prompt_evaluated": 4,
        "load_wait_s": 0.5,
        "prompt_s": 0.25,
        "ttft_s": 0.8,
        "total_s": 1.5,
        "tokens_per_s": 12.0,
        "model": "m",
    }


def test_pickling_and_copying_keep_the_metadata():
    a = Answer(
        "partial text",
        finish_reason="timeout",
        n_tokens=4,
        total_s=2.5,
        model="tiny.gguf",
        timeout=2.0,
        phase="generate",
        value=[1, 2],
    )
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        b = pickle.loads(pickle.dumps(a, protocol=protocol))
        assert type(b) is Answer and b == a and b.text == "partial text"
        assert b.__dict__ == a.__dict__
        assert b.marker() == a.marker()
    for c in (copy.copy(a), copy.deepcopy(a)):
        assert type(c) is Answer and c == a and c.__dict__ == a.__dict__


def test_repr_shows_text_reason_and_count():
    a = Answer("it's", finish_reason="length", n_tokens=2)
    assert repr(a) == "Answer(\"it's\", finish_reason='length', n_tokens=2)"
    assert repr(Answer()) == "Answer('', finish_reason='stop', n_tokens=0)"


# ---- marker -------------------------------------------------------------------------------------


def test_a_complete_answer_has_no_marker():
    assert Answer("done", finish_reason="stop", n_tokens=3).marker() is None


def test_timeout_with_tokens():
    a = Answer("abc", finish_reason="timeout", n_tokens=3, timeout=2.5)
    assert a.marker() == "timed out after 2.5 s — partial answer, 3 tokens"
    one = Answer("a", finish_reason="timeout", n_tokens=1, timeout=10.0)
    assert one.marker() == "timed out after 10 s — partial answer, 1 token"
    no_limit = Answer("a", finish_reason="timeout", n_tokens=2)
    assert no_limit.marker() == "timed out after the time limit — partial answer, 2 tokens"


def test_timeout_with_text_but_no_counted_token_is_still_a_partial_answer():
    a = Answer("text", finish_reason="timeout", n_tokens=0, timeout=1.0)
    assert a.marker() == "timed out after 1 s — partial answer, 0 tokens"


@pytest.mark.parametrize(
    ("phase", "why"),
    [
        ("load", "the model was still loading after 2.3 s"),
        ("queue", "the model was busy with another request the whole time"),
        ("prompt", "the prompt (1234 tokens) was still being evaluated"),
        ("generate", "nothing was generated"),
        (None, "nothing was generated"),
    ],
)
def test_timeout_without_tokens_says_which_phase(phase, why):
    meta = {"phase": phase} if phase else {}
    a = Answer("", finish_reason="timeout", timeout=3.0, load_wait_s=2.26, n_prompt_evaluated=1234, **meta)
    assert a.marker() == f"timed out after 3 s — no token came: {why}"


def test_cancelled_error_and_length_markers():
    assert Answer("ab", finish_reason="cancelled", n_tokens=2).marker() == "cancelled — partial answer, 2 tokens"
    assert Answer("", finish_reason="cancelled").marker() == "cancelled — partial answer, 0 tokens"
    err = Answer("a", finish_reason="error", n_tokens=1, error="ModelLoadError: boom")
    assert err.marker() == "error — partial answer, 1 token: ModelLoadError: boom"
    assert Answer("x" * 5, finish_reason="length", n_tokens=5).marker() == "stopped at max_tokens (5 tokens)"


@pytest.mark.parametrize(
    "meta",
    [
        {"finish_reason": "timeout", "n_tokens": 39, "timeout": 1.0},
        {"finish_reason": "timeout", "phase": "load", "timeout": 1.0},
        {"finish_reason": "cancelled", "n_tokens": 3},
        {"finish_reason": "error", "n_tokens": 1, "error": "RuntimeError: x"},
        {"finish_reason": "length", "n_tokens": 128},
    ],
)
def test_markers_are_words_that_need_no_emoji_font(meta):
    """Every character is a letter, digit, ASCII punctuation or the em dash: nothing that shows
    as an empty box where no emoji font is installed; and the marker is a plain sentence (the
    front ends bracket it, all in the same way)."""
    marker = Answer("abc" if meta.get("n_tokens") else "", **meta).marker()
    assert marker and set(marker) <= set(string.ascii_letters + string.digits + string.punctuation + " —")
    assert not marker.startswith(("[", "…")) and not marker.endswith("]")


# ---- time_report --------------------------------------------------------------------------------


def test_time_report_of_a_request_that_never_got_the_model():
    a = Answer("", finish_reason="timeout", load_wait_s=1.5, total_s=2.0)
    assert time_report(a, 100.0, {}) == "waiting for the model load 1.50 s"


def test_time_report_with_a_queue_wait_and_an_unfinished_prompt():
    a = Answer("", finish_reason="timeout", load_wait_s=1.0, n_prompt_evaluated=512, total_s=10.0)
    times = {"locked": 103.0, "end": 110.0}
    assert time_report(a, 100.0, times) == (
        "waiting for the model load 1.00 s; waiting for the model to be free 2.00 s; "
        "prompt evaluation 7.00 s, unfinished (512 tokens)"
    )


def test_time_report_with_prompt_and_generation():
    a = Answer("abc", finish_reason="timeout", load_wait_s=0.5, prompt_s=1.5, n_prompt_evaluated=20, n_tokens=9)
    times = {"locked": 100.5, "first": 102.0, "last": 105.0, "end": 107.0}
    assert time_report(a, 100.0, times) == (
        "waiting for the model load 0.50 s; prompt evaluation 1.50 s (20 tokens); generation 5.00 s (9 tokens)"
    )


# ---- build_answer -------------------------------------------------------------------------------


def stats(**kw) -> StreamStats:
    return StreamStats(**{"n_prompt_tokens": 10, "n_prompt_evaluated": 6, **kw})


def test_build_answer_fills_counts_and_times():
    times = {"locked": 101.0, "first": 102.0, "last": 104.0, "end": 105.0}
    s = stats(n_tokens=5, finish_reason="length", first_sample_at=101.75)
    a = build_answer("hello", s, times, None, 100.0, {"model": "tiny.gguf", "timeout": 30.0, "load_wait_s": 0.5})
    assert a == "hello" and isinstance(a, Answer)
    assert (a.finish_reason, a.n_tokens, a.n_prompt_tokens, a.n_prompt_evaluated) == ("length", 5, 10, 6)
    assert a.prompt_s == pytest.approx(0.75)  # from getting the model to the first sample
    assert a.ttft_s == pytest.approx(2.0) and a.total_s == pytest.approx(5.0)
    assert a.tokens_per_s == pytest.approx(2.0)  # 4 tokens after the first, in 2 s
    assert (a.model, a.timeout, a.load_wait_s) == ("tiny.gguf", 30.0, 0.5)


def test_error_wins_over_stop_reason_and_engine():
    s = stats(n_tokens=2, finish_reason="length")
    a = build_answer("ab", s, {"end": 1.0}, "timeout", 0.0, {"error": "RuntimeError: bad"})
    assert a.finish_reason == "error" and a.error == "RuntimeError: bad"


def test_our_stop_reason_wins_over_the_engines():
    s = stats(n_tokens=2, finish_reason="length")
    assert build_answer("ab", s, {"end": 1.0}, "cancelled", 0.0, {}).finish_reason == "cancelled"
    assert build_answer("ab", s, {"end": 1.0}, None, 0.0, {}).finish_reason == "length"


@pytest.mark.parametrize(("engine", "expected"), [(None, "stop"), ("stop", "stop"), ("weird", "stop")])
def test_engine_finish_reason_falls_back_to_stop(engine, expected):
    a = build_answer("x", stats(n_tokens=1, finish_reason=engine), {"end": 1.0}, None, 0.0, {})
    assert a.finish_reason == expected


def test_no_stats_at_all():
    a = build_answer("", None, {"end": 3.0}, "timeout", 1.0, {"n_chunks": 0, "phase": "load"})
    assert (a.finish_reason, a.n_tokens, a.n_prompt_tokens, a.prompt_s, a.ttft_s) == ("timeout", 0, 0, None, None)
    assert a.total_s == pytest.approx(2.0) and a.phase == "load"
    assert "no token came" in a.marker() and "loading" in a.marker()


@pytest.mark.parametrize("reason", ["timeout", "cancelled"])
def test_stopped_by_us_counts_the_chunks_streamed(reason):
    """The engine did not finish (its finish_reason is None): what streamed so far is the count."""
    meta = {"n_chunks": 7}
    a = build_answer("x" * 7, stats(n_tokens=5, finish_reason=None), {"end": 1.0}, reason, 0.0, meta)
    assert a.finish_reason == reason and a.n_tokens == 7
    assert "n_chunks" not in meta and not hasattr(a, "n_chunks")
    more_counted = build_answer("x", stats(n_tokens=9), {"end": 1.0}, reason, 0.0, {"n_chunks": 3})
    assert more_counted.n_tokens == 9  # never fewer than the engine counted


def test_chunks_do_not_count_when_the_engine_finished():
    a = build_answer("xy", stats(n_tokens=2, finish_reason="length"), {"end": 1.0}, "cancelled", 0.0, {"n_chunks": 5})
    assert a.n_tokens == 2 and not hasattr(a, "n_chunks")
    b = build_answer("xy", stats(n_tokens=2, finish_reason=None), {"end": 1.0}, None, 0.0, {"n_chunks": 5})
    assert b.finish_reason == "stop" and b.n_tokens == 2 and not hasattr(b, "n_chunks")


@pytest.mark.parametrize(
    ("n_tokens", "times"),
    [(1, {"first": 1.0, "last": 2.0}), (5, {"first": 1.0, "last": 1.0}), (5, {}), (5, {"first": 1.0})],
)
def test_no_tokens_per_second_without_two_tokens_over_time(n_tokens, times):
    a = build_answer("x", stats(n_tokens=n_tokens, finish_reason="length"), {**times, "end": 3.0}, None, 0.0, {})
    assert a.tokens_per_s is None


def test_without_an_end_time_the_total_runs_to_now():
    started = time.monotonic() - 5.0
    a = build_answer("x", None, {}, None, started, {})
    assert 5.0 <= a.total_s < 60.0


def test_build_answer_measures_the_wait_for_a_busy_model():
    times = {"locked": 10.0 + 0.5 + 2.0, "first": 13.0, "last": 14.0, "end": 14.0}
    a = build_answer("x", None, times, None, 10.0, {"load_wait_s": 0.5})
    assert a.queue_s == pytest.approx(2.0) and a.load_wait_s == 0.5
    assert build_answer("x", None, {}, None, 10.0, {}).queue_s is None  # never got the model
