"""The local engine's own generation loop (issue 12) on real tiny GGUF models: UTF-8-safe
detokenization, stop strings on a tail window, the sampler chain and its fast greedy path, the
context window, and conversations that keep their KV state on one model."""

from __future__ import annotations

import llama_cpp
import pytest

import llm_magic
from llm_magic import runtime
from llm_magic.engines import llama_loop
from llm_magic.engines.llama import LocalModel
from llm_magic.engines.llama_sampler import Sampler
from llm_magic.engines.stops import StopMatcher
from llm_magic.errors import ConfigError

from conftest import held_tokens


def loaded(path: str) -> LocalModel:
    llm_magic.ask("x", model=path, max_tokens=1)
    [entry] = [e for e in runtime.get().cache.entries() if e.spec.path == path]
    assert isinstance(entry.model, LocalModel)
    return entry.model


def byte_token(model: LocalModel, byte: int) -> int:
    """The id of the byte-fallback token ``<0xNN>``."""
    text = f"<0x{byte:02X}>"
    [token] = [t for t in range(model.llm.n_vocab()) if model.llm._model.token_get_text(t) == text]
    return token


# ---- text out ------------------------------------------------------------------------------------


def test_a_character_split_across_tokens_is_emitted_whole(tiny_model):
    model = loaded(tiny_model)
    detok = llama_loop.Detokenizer(llama_cpp, model._kv.vocab)
    euro = [byte_token(model, b) for b in "€".encode()]
    assert [detok.text(t) for t in euro] == ["", "", "€"]  # nothing broken on the way


@pytest.mark.parametrize(("max_tokens", "expected"), [(2, "a"), (3, "a"), (4, "a€")])
def test_an_answer_that_ends_mid_character_drops_the_unfinished_bytes(tiny_model, max_tokens, expected):
    # the grammar forces "a" and then "€", which this vocabulary can only spell in three byte tokens
    a = llm_magic.ask("x", model=tiny_model, max_tokens=max_tokens, raw=True, temperature=0, grammar='root ::= "a€"')
    assert a.text == expected and "\ufffd" not in a.text
    assert a.n_tokens == max_tokens and a.finish_reason == "length"


def test_stop_matcher_holds_back_only_what_may_start_a_stop_string():
    m = StopMatcher(["END", "xyz"])
    assert [m.feed(p) for p in ("abc", "E", "N", "q", "EN")] == ["abc", "", "", "ENq", ""]
    assert m.feed("D tail") == "" and m.hit  # "EN" + "D" is the stop string: nothing after it
    m = StopMatcher(["END"])
    assert m.feed("aE") == "a" and m.flush() == "E" and not m.hit  # held back, then released at the end
    assert StopMatcher([]).feed("as is") == "as is"


def test_a_stop_string_across_many_pieces_is_found_on_the_tail_window():
    m = StopMatcher(["the end"])
    out = [m.feed(c) for c in "once upon a time: the end and more"]
    assert "".join(out) == "once upon a time: " and m.hit
    assert len(m._tail) <= len("the end") - 1  # the window never grows with the answer


def test_a_stop_string_longer_than_the_answer_loses_nothing(tiny_model):
    plain = llm_magic.ask("hello", model=tiny_model, max_tokens=12, temperature=0, raw=True)
    stopped = llm_magic.ask("hello", model=tiny_model, max_tokens=12, temperature=0, raw=True, stop="z" * 200)
    assert stopped == plain and stopped.n_tokens == plain.n_tokens == 12


def test_a_stop_at_the_very_first_token(tiny_model):
    plain = llm_magic.ask("hello", model=tiny_model, max_tokens=12, temperature=0, raw=True)
    a = llm_magic.ask("hello", model=tiny_model, max_tokens=12, temperature=0, raw=True, stop=plain.text[0])
    assert a.text == "" and a.finish_reason == "stop" and a.n_tokens == 1


def test_max_tokens_past_the_context_stops_at_the_window(tiny_model):
    llm_magic.current_settings().models = {"small": {"path": tiny_model, "n_ctx": 64}}
    a = llm_magic.ask("hello there", model="small", max_tokens=1000, temperature=0, raw=True)
    assert a.finish_reason == "length" and a.n_prompt_tokens + a.n_tokens == 64
    assert llm_magic.ask("again", model="small", max_tokens=5).n_tokens == 5  # and the model goes on


# ---- sampling --------------------------------------------------------------------------------------


def test_fast_greedy_path_picks_what_llama_cpp_greedy_picks(tiny_model):
    model = loaded(tiny_model)
    kv = model._kv
    prompt = model.prepare("The capital of France", raw=True).tokens
    kv.clear()
    kv.decode(prompt)
    ours = Sampler(llama_cpp, kv.ctx, kv.vocab, temperature=0)
    native = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(native, llama_cpp.llama_sampler_init_greedy())
    try:
        for _ in range(30):
            token = ours.sample()
            assert token == llama_cpp.llama_sampler_sample(native, kv.ctx, -1)
            kv.decode_one(token)
    finally:
        ours.close()
        llama_cpp.llama_sampler_free(native)


def test_the_same_seed_gives_the_same_text_and_another_seed_another(tiny_model):
    ask = lambda seed: llm_magic.ask("hello", model=tiny_model, max_tokens=30, temperature=1.0, raw=True, seed=seed)  # noqa: E731
    a, b, c = ask(11), ask(11), ask(12)
    assert a == b and a.n_tokens == b.n_tokens == 30 and c != a


def test_penalties_are_applied_by_the_chain(tiny_model):
    model = loaded(tiny_model)
    prompt = "the capital of France is Paris"
    plain = llm_magic.ask(prompt, model=tiny_model, max_tokens=20, temperature=0, raw=True)
    seen = set(model.context_tokens()[: plain.n_prompt_tokens])
    assert not set(model.context_tokens()[plain.n_prompt_tokens :]) <= seen  # greedy goes its own way
    # a negative presence penalty lifts every token already seen (the prompt's tail included) far
    # above the rest: greedy can then only pick prompt tokens
    lifted = llm_magic.ask(prompt, model=tiny_model, max_tokens=20, temperature=0, raw=True, presence_penalty=-1e4)
    assert lifted.n_tokens == 20 and set(model.context_tokens()[lifted.n_prompt_tokens :]) <= seen
    repeat = llm_magic.ask(prompt, model=tiny_model, max_tokens=20, temperature=0, raw=True, repeat_penalty=1.3)
    assert repeat.n_tokens == 20  # the penalties' chain with the greedy pick


def test_grammar_constrains_sampling_and_a_bad_grammar_is_one_line(tiny_model):
    for temperature in (0, 1.0):
        a = llm_magic.ask("x", model=tiny_model, max_tokens=8, temperature=temperature, grammar='root ::= "yes" | "no"')
        assert a.text in ("yes", "no") and a.finish_reason == "stop"
    with pytest.raises(ConfigError, match="invalid GBNF grammar") as info:
        llm_magic.ask("x", model=tiny_model, grammar="root ::= (")
    assert "\n" not in str(info.value)
    assert llm_magic.ask("x", model=tiny_model, max_tokens=3).n_tokens == 3  # and the model goes on


# ---- conversations keep their KV state ------------------------------------------------------------


def follow_up_costs(model: str, names: str, budget: object = "1GB") -> dict[str, list[tuple[int, int]]]:
    llm_magic.current_settings().kv_cache_budget = budget
    costs: dict[str, list[tuple[int, int]]] = {}
    for i, name in enumerate(names):
        a = llm_magic.ask(f"Question {i} from {name}?", model=model, conversation=name, max_tokens=30, temperature=0)
        costs.setdefault(name, []).append((a.n_prompt_tokens, a.n_prompt_evaluated))
    return costs


def test_alternating_conversations_evaluate_only_their_new_tokens(chat_model):
    costs = follow_up_costs(chat_model, "ABAB")
    for name in "AB":
        (first, _), (total, evaluated) = costs[name]
        assert total > first + 30 and evaluated <= total - first - 30 + 1  # the history came back from its state
    row = next(r for r in llm_magic.models() if r["path"] == chat_model)
    assert row["kv_states"] == 1 and row["kv_bytes"] > 0


def test_saved_states_are_bounded_least_recently_used_first(chat_model):
    model = loaded(chat_model)
    follow_up_costs(chat_model, "A")
    one = model._kv.save()
    assert one is not None
    # room for two states: A is saved when B starts, B when C starts; C's start pushes A out
    costs = follow_up_costs(chat_model, "ABCBA", budget=int(one.nbytes * 2.5))
    (_, _), (b_total, b_evaluated) = costs["B"]
    (_, _), (a_total, a_evaluated) = costs["A"]
    assert b_evaluated < b_total // 2  # B's state was kept
    assert a_evaluated > a_total // 2  # A's was dropped: its whole history is read again
    assert model.info()["kv_bytes"] <= int(one.nbytes * 2.5)


def test_no_budget_keeps_no_state(chat_model):
    costs = follow_up_costs(chat_model, "ABA", budget=0)
    (_, _), (total, evaluated) = costs["A"]
    assert evaluated > total // 2 and loaded(chat_model).info()["kv_states"] == 0


def test_a_direct_llama_call_voids_what_the_loop_recorded(tiny_model):
    model = loaded(tiny_model)
    first = llm_magic.ask("hello", model=tiny_model, max_tokens=5, temperature=0, raw=True)
    model.llm.eval(model.llm.tokenize(b"something else"))  # llama-cpp-python's own API, behind our back
    again = llm_magic.ask("hello", model=tiny_model, max_tokens=5, temperature=0, raw=True)
    assert again == first and again.n_prompt_evaluated == again.n_prompt_tokens
    assert held_tokens(model)[: again.n_prompt_tokens] == model.prepare("hello", raw=True).tokens


def test_a_decode_the_record_missed_is_dropped_before_the_next_prompt(tiny_model):
    # an interrupt between llama_decode's return and our record leaves a KV cell we do not know about
    model = loaded(tiny_model)
    first = llm_magic.ask("hello", model=tiny_model, max_tokens=8, temperature=0, raw=True)
    model._kv.decode_one(5)
    model._kv.tokens.pop()  # llama.cpp holds one token more than recorded
    again = llm_magic.ask("hello", model=tiny_model, max_tokens=8, temperature=0, raw=True)
    assert again == first and again.n_prompt_evaluated == 1  # the stray cell went, the prefix stayed
    held_tokens(model)  # llama.cpp holds exactly what we recorded


# ---- prompt lookup (--draft lookup) ----------------------------------------------------------------


def test_drafts_take_what_followed_the_latest_match():
    from llm_magic.engines.llama_lookup import NgramIndex

    assert NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7, 2, 3, 4]).draft(3) == [6, 7, 2]  # "2 3 4" before 6 7 ...
    assert NgramIndex([5, 6, 7, 8, 6]).draft(8) == [7, 8, 6]  # falls back to one token
    assert NgramIndex([1, 2, 3]).draft(8) == [] and NgramIndex([1, 1]).draft(0) == []
    index = NgramIndex([4, 5, 6])
    for token in (7, 4, 5):
        index.append(token)
    assert index.draft(8) == [6, 7, 4, 5]  # tokens appended later are found too


def test_prompt_lookup_gives_the_greedy_text_and_drafts_from_the_prompt(tiny_model):
    plain = llm_magic.ask("hello", model=tiny_model, max_tokens=60, temperature=0, raw=True)
    prompt = f"hello{plain.text}\n\nhello"
    plain = llm_magic.ask(prompt, model=tiny_model, max_tokens=60, temperature=0, raw=True)
    fast = llm_magic.ask(prompt, model=tiny_model, max_tokens=60, temperature=0, raw=True, draft="lookup")
    assert fast == plain and fast.n_tokens == plain.n_tokens == 60 and fast.finish_reason == "length"
    assert fast.n_drafted > 0 and plain.n_drafted == 0  # (this random model rarely agrees: see test_default_model)
    held_tokens(loaded(tiny_model))  # the rejected drafts' cells are gone: llama.cpp holds what we recorded


def test_prompt_lookup_keeps_stops_and_stop_strings(tiny_model):
    base = llm_magic.ask("hello", model=tiny_model, max_tokens=40, temperature=0, raw=True)
    prompt = f"hello{base.text}\n\nhello"
    plain = llm_magic.ask(prompt, model=tiny_model, max_tokens=40, temperature=0, raw=True)
    stop = plain.text[20:24]
    cut = llm_magic.ask(prompt, model=tiny_model, max_tokens=40, temperature=0, raw=True, draft="lookup", stop=stop)
    assert cut.text == plain.text[: plain.text.index(stop)] and cut.finish_reason == "stop"
    s = llm_magic.stream(prompt, model=tiny_model, max_tokens=1000, temperature=0, raw=True, draft="lookup")
    got = []
    for chunk in s:
        got.append(chunk)
        if len(got) == 5:
            s.stop()
    assert s.answer.finish_reason == "cancelled" and s.answer.text == "".join(got)
    with pytest.raises(ConfigError, match="draft must be one of lookup, none"):
        llm_magic.ask("x", model=tiny_model, draft="ngram")


@pytest.mark.parametrize(("batch", "polls"), [(None, 1), (32, 7), (1000, 1)])
def test_smaller_prompt_batches_give_way_sooner(tiny_model, batch, polls):
    """A request that must give way soon (an inline completion) reads its prompt in smaller
    batches: ``should_stop`` is polled before each, so a waiting ask waits one such batch."""
    from llm_magic.engines.base import StreamStats

    model = loaded(tiny_model)
    kv = model._kv
    kv.clear()
    tokens = [model.llm.token_bos(), *model.llm.tokenize(b"word " * 300, add_bos=False)][:200]
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(len(kv.tokens))
        return False

    assert llama_loop.evaluate_prompt(kv, tokens, should_stop, StreamStats(), batch)
    assert len(asked) == polls and kv.tokens == tokens
    if batch == 32:
        assert asked == list(range(0, 200, 32))  # before each 32-token batch
