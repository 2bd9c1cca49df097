"""llm_magic.engines.llama: ``LocalModel`` on real tiny GGUF models — chat template vs Q/A prompt,
stop strings and exact token counts, a long prompt evaluated batch by batch, seeds, corrupt files,
prompts longer than the context window (an unreadable file: tests/integration/test_process.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llm_magic
from llm_magic import runtime
from llm_magic.engines import llama_loop
from llm_magic.engines.base import Engine, StreamStats
from llm_magic.engines.llama import LocalModel
from llm_magic.errors import ModelLoadError, PromptTooLong
from llm_magic.gguf_header import diagnose

from conftest import held_tokens


def loaded(path: str) -> LocalModel:
    """The cache's engine for ``path`` (loaded by an ask)."""
    [entry] = [e for e in runtime.get().cache.entries() if e.spec.path == os.path.realpath(path)]
    assert isinstance(entry.model, LocalModel)
    return entry.model


def generated_ids(model: LocalModel, answer: llm_magic.Answer) -> list[int]:
    """The tokens generated after the prompt, as the KV cache holds them."""
    return held_tokens(model)[answer.n_prompt_tokens :]


def test_a_local_model_is_an_engine(tiny_model):
    llm_magic.ask("x", model=tiny_model, max_tokens=1)
    model = loaded(tiny_model)
    assert isinstance(model, Engine)
    assert (model.kind, model.concurrency, model.closed) == ("local", 1, False)
    info = model.info()
    assert info["n_ctx"] == 4096 and info["chat_handler"] is None and str(info["mlock"]).startswith(("on", "off"))
    assert {k: v for k, v in llm_magic.models()[0].items() if k in info} == info  # the status shows them


def test_chat_model_uses_its_template(chat_model):
    a = llm_magic.ask("hello", model=chat_model, max_tokens=10, temperature=0)
    model = loaded(chat_model)
    prepared = model.prepare("hello")
    assert prepared.mode == "chat"
    assert prepared.text.startswith("<|im_start|>user\nhello<|im_end|>")
    text = model.llm.detokenize(prepared.tokens, special=True).decode()
    assert "<|im_start|>user\nhello<|im_end|>" in text.replace(" ", "")  # SPM detokenizing adds spaces
    assert a.n_prompt_tokens == len(prepared.tokens)  # that very prompt reached the model
    raw = model.prepare("hello", raw=True)
    assert raw.mode == "raw" and raw.text == "hello" and len(raw.tokens) < len(prepared.tokens)
    assert llm_magic.ask("hello", model=chat_model, max_tokens=2, raw=True).n_prompt_tokens == len(raw.tokens)
    system = model.prepare("hello", system="Be brief.")
    assert system.text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_base_model_gets_qa_prompt(tiny_model):
    llm_magic.ask("hello", model=tiny_model, max_tokens=2)
    model = loaded(tiny_model)
    prepared = model.prepare("What is it?")
    assert prepared.mode == "completion" and prepared.text == "Q: What is it?\nA:" and prepared.stop == ["\nQ:"]
    assert model.llm.detokenize(prepared.tokens).decode().strip().startswith("Q: What is it?\nA:")
    a = llm_magic.ask("What is it?", model=tiny_model, max_tokens=2)
    assert a.n_prompt_tokens == len(prepared.tokens)


def test_chat_completion_option_forces_the_qa_prompt(chat_model):
    llm_magic.current_settings().models = {"plain": {"path": chat_model, "chat": "completion"}}
    a = llm_magic.ask("What is it?", model="plain", max_tokens=2)
    [entry] = runtime.get().cache.find("plain")
    prepared = entry.model.prepare("What is it?")
    assert prepared.mode == "completion" and prepared.text == "Q: What is it?\nA:"
    assert a.n_prompt_tokens == len(prepared.tokens)


def test_same_seed_same_answer(tiny_model):
    a = llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=0.8, seed=42)
    b = llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=0.8, seed=42)
    c = llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=0.8, seed=7)
    assert a == b and len(a) > 0
    assert c != a  # the seed is really used


def test_max_tokens_counts_exactly(tiny_model):
    a = llm_magic.ask("hello", model=tiny_model, max_tokens=25, temperature=0, raw=True)
    assert a.finish_reason == "length" and a.n_tokens == 25
    ids = generated_ids(loaded(tiny_model), a)
    assert len(ids) == 24  # the last sampled token is not evaluated into the KV cache
    assert a.startswith(loaded(tiny_model).llm.detokenize(ids, prev_tokens=[1]).decode())


def test_a_cancelled_answer_counts_the_tokens_it_streamed(tiny_model):
    s = llm_magic.stream("hello", model=tiny_model, max_tokens=100_000, temperature=0, raw=True)
    got = []
    for chunk in s:  # the tiny model's vocabulary is ASCII: one chunk per token
        got.append(chunk)
        if len(got) == 20:
            s.stop()
    answer = s.answer
    assert answer.finish_reason == "cancelled" and answer == "".join(got)
    assert len(generated_ids(loaded(tiny_model), answer)) == len(got)  # what the model really generated
    assert answer.n_tokens == len(got)


def test_stop_strings_cut_the_text_and_count_tokens_exactly(tiny_model):
    # the tiny model emits one ASCII token per chunk: chunk k is token k
    chunks = list(llm_magic.stream("hello", model=tiny_model, max_tokens=60, temperature=0, raw=True))
    text = "".join(chunks)
    stop = text[100:104] if len(text) > 110 else text[len(text) // 2 : len(text) // 2 + 3]
    cut = text.index(stop)
    k = next(i for i in range(len(chunks)) if len("".join(chunks[: i + 1])) > cut + len(stop) - 1)
    for stop_arg in (stop, [stop]):  # a plain string is one stop string, not a list of characters
        a = llm_magic.ask("hello", model=tiny_model, max_tokens=60, temperature=0, raw=True, stop=stop_arg)
        assert a == text[:cut] and a.finish_reason == "stop"
        assert a.n_tokens == k + 1


def test_long_prompt_is_evaluated_batch_by_batch_and_can_stop_between_batches(tiny_model):
    llm_magic.current_settings().models = {"big": {"path": tiny_model, "n_ctx": 2048, "n_batch": 32}}
    prompt = "the capital of France is Paris " * 250
    full = llm_magic.ask(prompt, model="big", timeout=60, max_tokens=5, temperature=0)
    assert full.n_tokens == 5 and full.n_prompt_tokens > 1000
    [entry] = runtime.get().cache.entries()
    model = entry.model
    prepared = model.prepare(prompt + " and more")
    seen = []

    def should_stop():
        seen.append(len(model.context_tokens()))
        return len(seen) > 3

    with entry.queue.exclusive(10) as idle:  # no request may use the model meanwhile
        assert idle
        assert llama_loop.common_prefix(model.context_tokens(), prepared.tokens) > 1000  # a shared prefix
        model.forget_context()  # a full evaluation
        reported: list[tuple[int, int]] = []  # "reading the prompt N / M tokens", per batch
        stats = StreamStats(on_prompt=lambda d, t: reported.append((d, t)))
        assert llama_loop.evaluate_prompt(model._kv, prepared.tokens, should_stop, stats) is False
    assert seen == [0, 32, 64, 96]  # checked before every batch of n_batch tokens
    assert reported == [(n, len(prepared.tokens)) for n in (0, 32, 64, 96)] and stats.n_prompt_done == 96  # stopped
    again = llm_magic.ask(prompt, model="big", timeout=60, max_tokens=5, temperature=0)
    assert again == full  # the model state stayed consistent
    assert again.n_prompt_evaluated < again.n_prompt_tokens  # and the evaluated batches were reused


def test_prompt_longer_than_context(tiny_model):
    llm_magic.current_settings().models = {"small": {"path": tiny_model, "n_ctx": 64}}
    with pytest.raises(PromptTooLong, match=r"the prompt is \d+ tokens but the context window .* is 64"):
        llm_magic.ask("word " * 200, model="small")
    assert llm_magic.ask("short", model="small", max_tokens=5).n_tokens == 5


# ---- bad files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "reason"), [("not_gguf", "not a GGUF file"), ("truncated", "truncated")])
def test_corrupt_files_fail_clearly_and_others_keep_working(kind, reason, corrupt_files, tiny_model):
    path = str(corrupt_files[kind])
    assert reason in diagnose(path)
    with pytest.raises(ModelLoadError, match=reason):
        llm_magic.ask("x", model=path)
    [bad] = [m for m in llm_magic.models() if m["path"] == path]
    assert bad["state"] == "failed" and reason in bad["error"]
    assert llm_magic.ask("x", model=tiny_model, max_tokens=3).n_tokens == 3


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "wrong_magic"])
def test_bad_model_files(kind, tmp_path, tiny_model):
    path = tmp_path / f"{kind}.gguf"
    good = Path(tiny_model).read_bytes()
    expected = {
        "empty": "the file is empty",
        "random": "not a GGUF file",
        "truncated": "truncated",
        "wrong_magic": "not a GGUF file",
    }[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 3])
    else:
        path.write_bytes(b"GGML" + good[4:])
    with pytest.raises(ModelLoadError, match=expected):
        llm_magic.ask("x", model=str(path))
    assert llm_magic.ask("x", model=tiny_model, max_tokens=2).n_tokens == 2  # others live on
