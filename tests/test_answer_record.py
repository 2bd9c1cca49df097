"""llm_magic.answer_record: Answer.prompt is the exact text the model received; a log row per
answer; replay of an identical request from the log with no model call."""

from __future__ import annotations

import time

import llm_magic
from llm_magic import answer_record, runtime
from llm_magic.engines.base import Prepared

from conftest import evaluated_prompt, evaluated_tokens
from tiny_gguf import write_tiny_model


def uses(name: str) -> int:
    return next(r["uses"] for r in llm_magic.models() if r["name"] == name)


def test_answer_prompt_is_the_text_the_model_evaluated(use_model, chat_model):
    answer = llm_magic.ask("What is 2+2?", max_tokens=2, system="Be brief.")
    assert answer.prompt == "Be brief.\n\nQ: What is 2+2?\nA:"
    assert evaluated_prompt(answer) == answer.prompt
    chat = llm_magic.ask("hello", model=chat_model, max_tokens=2)
    assert "<|im_start|>user\nhello<|im_end|>" in chat.prompt  # after the chat template
    [entry] = runtime.get().cache.find(chat.model)
    tokens = entry.model.llm.tokenize(chat.prompt.encode(), add_bos=True, special=True)
    assert tokens == evaluated_tokens(chat)  # the very tokens the model evaluated


def test_chat_messages_are_rendered_as_text():
    prepared = Prepared(
        "vision",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url"}]},
        ],
    )
    assert answer_record.model_prompt(prepared) == "[system]\nsys\n\n[user]\nwhat is it?\n[image_url]"
    assert answer_record.model_prompt(Prepared("raw", text="as is")) == "as is"


def test_an_identical_request_is_replayed_from_the_log_without_the_model(use_model):
    first = llm_magic.ask("tell me", max_tokens=6, seed=3, temperature=0.8)
    assert first.log_id and not first.replayed
    name = first.model
    before = uses(name)
    stream = llm_magic.stream("tell me", max_tokens=6, seed=3, temperature=0.8)
    replayed = answer_record.replay(stream)
    assert replayed is not None and replayed.replayed
    assert replayed.text == first.text and replayed.prompt == first.prompt
    assert replayed.provenance["replayed"] is True and replayed.provenance["replayed_from"] == first.log_id
    assert uses(name) == before  # no model call
    for other in (
        llm_magic.stream("tell me", max_tokens=6, seed=4, temperature=0.8),  # another seed
        llm_magic.stream("tell me", max_tokens=7, seed=3, temperature=0.8),  # another limit
        llm_magic.stream("tell me!", max_tokens=6, seed=3, temperature=0.8),  # another prompt
        llm_magic.stream("tell me", max_tokens=6, seed=3, temperature=0.8, system="x"),  # another system prompt
    ):
        assert answer_record.replay(other) is None


def test_replay_does_not_wait_for_a_paused_background_hash(tiny_model, tmp_path):
    """The background hash of a model file pauses while any model is busy; a --cache ask must not
    hang on it (it hashes the file itself after a moment)."""
    fresh = str(write_tiny_model(tmp_path / "fresh.gguf", seed=7))  # a file whose hash nobody knows yet
    busy = llm_magic.stream("long", model=tiny_model, max_tokens=100000, timeout=120)
    assert next(busy)  # a request holds the other model: background hashes pause
    try:
        first = llm_magic.ask("hi", model=fresh, max_tokens=3, seed=1)
        t0 = time.monotonic()
        replayed = answer_record.replay(llm_magic.stream("hi", model=fresh, max_tokens=3, seed=1))
        assert time.monotonic() - t0 < 30
        assert replayed is not None and replayed.text == first.text
    finally:
        busy.close()


def test_conversation_turns_are_logged_but_not_replayed(use_model):
    first = llm_magic.ask("hi", max_tokens=3, conversation="c1", seed=1)
    assert first.log_id
    assert answer_record.replay(llm_magic.stream("hi", max_tokens=3, conversation="c1", seed=1)) is None
