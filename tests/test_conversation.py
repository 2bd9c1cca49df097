"""llm_magic.conversation: ``Conversations`` keeps one conversation per (model key, name) —
``get``, ``find``, ``reset``; ``Conversation.record`` adds a turn, drops the turns the prompt
trimmed, and keeps (or clears) the tokens the model's KV cache holds."""

from __future__ import annotations

import threading

import llm_magic
from llm_magic import runtime
from llm_magic.conversation import DEFAULT, Conversation, Conversations, Turn
from llm_magic.prompts import qa_text
from llm_magic.specs import resolve

KEY_A = ("/models/a.gguf", 4096)
KEY_B = ("/models/b.gguf", 4096)


# ---- Conversations ------------------------------------------------------------------------------


def test_get_creates_once_per_model_and_name():
    convs = Conversations()
    a = convs.get(DEFAULT, KEY_A, "a.gguf")
    assert isinstance(a, Conversation) and (a.name, a.model_key, a.model_name) == ("default", KEY_A, "a.gguf")
    assert a.turns == [] and a.ctx_tokens == [] and a.ctx_text == "" and a.trimmed == 0 and a.system is None
    assert convs.get(DEFAULT, KEY_A, "renamed") is a  # the key decides, not the display name
    assert convs.get(DEFAULT, KEY_B, "b.gguf") is not a  # the same name on another model
    assert convs.get("other", KEY_A, "a.gguf") is not a


def test_find_by_name_across_models():
    convs = Conversations()
    a = convs.get("chat", KEY_A, "a.gguf")
    b = convs.get("chat", KEY_B, "b.gguf")
    c = convs.get("notes", KEY_A, "a.gguf")
    assert convs.find("chat") == [a, b]
    assert convs.find("notes") == [c]
    assert convs.find("missing") == []
    assert convs.find() == [a, b, c]


def test_reset_one_name_or_all():
    convs = Conversations()
    convs.get("chat", KEY_A, "a.gguf").turns.append(Turn("hi", "hello", "stop"))
    convs.get("chat", KEY_B, "b.gguf")
    notes = convs.get("notes", KEY_A, "a.gguf")
    assert convs.reset("chat") == 2
    assert convs.find("chat") == [] and convs.find() == [notes]
    assert convs.reset("chat") == 0
    assert convs.get("chat", KEY_A, "a.gguf").turns == []  # a fresh one
    assert convs.reset() == 2 and convs.find() == []


def test_concurrent_gets_agree_on_one_conversation():
    convs = Conversations()
    barrier = threading.Barrier(8)
    got: list[Conversation] = []

    def get():
        barrier.wait(10)
        got.append(convs.get("shared", KEY_A, "a.gguf"))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8 and all(c is got[0] for c in got) and convs.find() == [got[0]]


# ---- Conversation.record ------------------------------------------------------------------------


def conv_with_turns(n: int) -> Conversation:
    c = Conversation(name="c", model_key=KEY_A, model_name="a.gguf")
    for i in range(n):
        c.record(f"q{i}", f"a{i}", "stop", i, [i], f"text{i}", None)
    return c


def test_record_appends_a_turn_and_keeps_the_context():
    c = Conversation(name="c", model_key=KEY_A, model_name="a.gguf")
    c.record("What?", " That.", "length", 0, [1, 5, 7], "Q: What?\nA: That.", "Be brief.")
    assert c.turns == [Turn("What?", " That.", "length")]
    assert c.ctx_tokens == [1, 5, 7] and c.ctx_text == "Q: What?\nA: That."
    assert c.system == "Be brief." and c.trimmed == 0


def test_record_drops_the_turns_the_prompt_left_out():
    c = conv_with_turns(4)
    c.record("q4", "a4", "stop", 2, [9], "t", None)  # the prompt kept only the last 2 earlier turns
    assert [t.user for t in c.turns] == ["q2", "q3", "q4"] and c.trimmed == 2
    c.record("q5", "a5", "cancelled", 3, [9], "t", None)  # all kept: nothing dropped
    assert [t.user for t in c.turns] == ["q2", "q3", "q4", "q5"] and c.trimmed == 2
    assert c.turns[-1].finish_reason == "cancelled"
    c.record("q6", "a6", "stop", 0, [9], "t", None)
    assert [t.user for t in c.turns] == ["q6"] and c.trimmed == 6


def test_record_clears_the_context_when_the_prompt_never_finished():
    c = conv_with_turns(1)
    assert c.ctx_tokens == [0] and c.ctx_text == "text0"
    c.record("q1", "", "timeout", 1, None, None, None)
    assert (c.ctx_tokens, c.ctx_text) == ([], "")
    c.record("q2", "a2", "stop", 2, [3, 4], "t", None)
    assert (c.ctx_tokens, c.ctx_text) == ([3, 4], "t")
    c.record("q3", "a3", "stop", 3, [3, 4, 5], None, None)  # tokens without their text: unusable
    assert (c.ctx_tokens, c.ctx_text) == ([], "")
    assert len(c.turns) == 4


def test_record_replaces_the_system_prompt():
    c = conv_with_turns(0)
    c.record("q", "a", "stop", 0, [1], "t", "first")
    c.record("q", "a", "stop", 1, [1], "t", None)
    assert c.system is None


# ---- with a real model --------------------------------------------------------------------------


def test_a_real_conversation_is_kept_per_model(tiny_model, tiny_model_b):
    first = llm_magic.ask("Hello there", model=tiny_model, max_tokens=4, temperature=0, conversation="talk")
    second = llm_magic.ask("And then?", model=tiny_model, max_tokens=4, temperature=0, conversation="talk")
    llm_magic.ask("Hi", model=tiny_model_b, max_tokens=2, conversation="talk")
    convs = runtime.get().conversations
    [conv] = [c for c in convs.find("talk") if c.model_key == resolve(tiny_model).key]
    assert conv.model_name == "tiny.gguf" and len(convs.find("talk")) == 2
    assert conv.turns == [Turn("Hello there", first.text, "length"), Turn("And then?", second.text, "length")]
    # the KV cache holds the prompt and the generated tokens it evaluated (the last sampled one is not)
    assert second.n_prompt_tokens < len(conv.ctx_tokens) <= second.n_prompt_tokens + second.n_tokens
    prompt = qa_text(conv.turns[:1], "And then?", None)  # the tiny model has no chat template
    assert (prompt + second.text).startswith(conv.ctx_text) and len(conv.ctx_text) > len(prompt)
    assert second.n_prompt_evaluated < second.n_prompt_tokens  # the first turn's tokens were reused
    assert convs.reset("talk") == 2 and convs.find() == []
