"""llm_magic.ipython.magics: %%ask and %ask in a real shell with the tiny model."""

from __future__ import annotations

import logging
import time

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import cache as cache_mod
from llm_magic import conversation, runtime
from llm_magic.specs import ENV_MODEL

from conftest import LONG_CTX, evaluated_prompt, evaluated_tokens, interrupt_after, llm_threads, run, run_error


def conversations():
    return runtime.get().conversations


# ---- streaming into the cell, -o ---------------------------------------------------------------


def test_cell_magic_streams_and_stores_answer(ip):
    result, out = run(ip, "%%ask -n 20 --temperature 0 -o ans\nWhat is the capital of France?")
    ans = ip.user_ns["ans"]
    assert isinstance(ans, llm_magic.Answer)
    assert ans.finish_reason == "length" and ans.n_tokens == 20
    assert ans.text.strip() and ans.text.strip() in out  # streamed to stdout in a terminal shell
    assert out.endswith("\n[stopped at max_tokens (20 tokens)]\n")
    assert llm_magic.last_answer() is ans
    assert result.result is None  # shown once, not echoed again as Out[]
    # the cell body (its final newline dropped) is the question, in the model's Q/A prompt
    assert evaluated_prompt(ans) == "Q: What is the capital of France?\nA:"


def test_line_magic_takes_prompt_after_flags(ip):
    question = "What's the capital of France? Don't say \"Rome\"."
    run(ip, f"%ask -n 5 -o a {question}")
    a = ip.user_ns["a"]
    assert a.n_tokens == 5 and a.finish_reason == "length"
    # the prompt the model evaluated is the question as typed (quotes and apostrophes kept), and
    # nothing else: token for token what the model's own tokenizer makes of the Q/A prompt
    expected = f"Q: {question}\nA:"
    assert evaluated_prompt(a) == expected
    [entry] = runtime.get().cache.find(a.model)
    assert evaluated_tokens(a) == entry.model.llm.tokenize(expected.encode(), add_bos=True, special=True)
    assert a.n_prompt_tokens == len(evaluated_tokens(a))
    # and the same through a conversation, which records the user's text
    run(ip, f"%ask -c q -n 2 {question}")
    [conv] = conversations().find("q")
    assert conv.turns[0].user == question
    assert conv.ctx_text.startswith(expected)


def test_no_flags_and_flags_only_lines(ip):
    run(ip, "%ask hello there")
    assert evaluated_prompt(llm_magic.last_answer()) == "Q: hello there\nA:"
    error, _ = run_error(ip, "%ask -n 5")
    assert isinstance(error, UsageError) and "prompt is empty" in str(error)


# ---- the line is verbatim: no IPython $x / {expr} expansion ----------------------------------------


@pytest.mark.parametrize("end", ["", "?"])
def test_line_magic_is_not_var_expanded(ip, end):
    ip.user_ns["x"] = "EXPANDED"
    run(ip, f"%ask -c v -n 2 what is {{1+1}} and $x{end}")
    [conv] = conversations().find("v")
    assert conv.turns[0].user == f"what is {{1+1}} and $x{end}"
    assert f"Q: what is {{1+1}} and $x{end}\nA:" in conv.ctx_text  # the exact text the model evaluated
    assert "EXPANDED" not in conv.ctx_text and "what is 2" not in conv.ctx_text
    # llm_magic's own {name} interpolation does apply
    run(ip, f"%ask -c w -n 2 what is {{x}} and $x{end}")
    [conv] = conversations().find("w")
    assert conv.turns[0].user == f"what is EXPANDED and $x{end}"
    assert f"Q: what is EXPANDED and $x{end}\nA:" in conv.ctx_text


def test_indented_line_magic_is_verbatim_too(ip):
    ip.user_ns["x"] = "EXPANDED"
    run(ip, "if True:\n    %ask -c v -n 2 what is {1+1} and $x?\n")
    [conv] = conversations().find("v")
    assert conv.turns[0].user == "what is {1+1} and $x?"


def test_cell_magic_is_not_var_expanded(ip):
    ip.user_ns["x"] = "EXPANDED"
    run(ip, "%%ask -c $x -n 2\nwhat is {1+1} and $x,\nand {x}?")
    assert conversations().find("EXPANDED") == []  # the option line is not expanded either
    [conv] = conversations().find("$x")
    assert conv.turns[0].user == "what is {1+1} and $x,\nand EXPANDED?"
    assert "Q: what is {1+1} and $x,\nand EXPANDED?\nA:" in conv.ctx_text


# ---- the model cache, timeouts, interrupts -------------------------------------------------------


def test_second_ask_builds_no_second_llama(ip, llama_constructions):
    run(ip, "%%ask -n 3\nfirst")
    built = llama_constructions["n"]
    assert built <= 1  # 1 if the preload finished after the spy was installed
    run(ip, "%%ask -n 3 -o b\nsecond")
    run(ip, "%%ask -n 3\nthird")
    assert llama_constructions["n"] == built
    assert runtime.get().cache.constructions == 1
    assert ip.user_ns["b"].load_wait_s < 0.05


def test_timeout_marks_partial_answer(ip, caplog):
    caplog.set_level(logging.INFO, logger="llm_magic")
    run(ip, f"%config AskMagics.n_ctx = {LONG_CTX}")  # a window the tiny model cannot fill in 1 s
    _, out = run(ip, "%%ask -t 1 -n 100000 --temperature 0 -o a\nTell me everything")
    a = ip.user_ns["a"]
    assert a.finish_reason == "timeout" and a.n_tokens > 0
    # under the answer: the marker, then where the time went (one line each, the same form)
    assert a.time_report.startswith("waiting for the model load") and "generation" in a.time_report
    tokens = f"{a.n_tokens} token{'s' if a.n_tokens != 1 else ''}"
    assert out.endswith(f"\n[timed out after 1 s — partial answer, {tokens}]\n[{a.time_report}]\n")
    assert f"({tokens})" in a.time_report
    assert "WARNING" not in out and "waiting for" not in a.text
    # the logger has it too, at INFO: a timeout is not an error (no warning for the pink box)
    [record] = [r for r in caplog.records if "timed out" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"llm_magic: tiny.gguf timed out after 1 s: {a.time_report}"
    run(ip, "%%ask -n 5 -o b\nnext")
    assert ip.user_ns["b"].n_tokens == 5


def test_timeout_in_a_notebook_shows_where_the_time_went_under_the_marker(ip, monkeypatch):
    outputs = ask_in_notebook(ip, monkeypatch, "%%ask -t 1 -n 100000 -o a\nTell me everything")
    a = ip.user_ns["a"]
    final = outputs[-1].data
    assert final["text/html"] == llm_magic.rendering.answer_html(a.text, a.marker(), note=a.time_report)
    assert final["text/html"].endswith(f'<p class="llm-magic-note" style="opacity:0.7">[{a.time_report}]</p>')
    assert final["text/plain"].endswith(f"\n\n[{a.marker()}]\n[{a.time_report}]")


def test_kernel_interrupt_keeps_partial_answer(ip):
    watcher = interrupt_after(5)
    t0 = time.monotonic()
    _, out = run(ip, "%%ask -n 100000 -t 60 -o a\nTalk")
    watcher.join()
    assert time.monotonic() - t0 < 30  # not the 60 s timeout: the interrupt stopped it
    a = ip.user_ns["a"]
    assert a.finish_reason == "cancelled" and a.n_tokens >= 5 and len(a) > 0
    assert out.endswith(f"\n[cancelled — partial answer, {a.n_tokens} tokens]\n")
    assert a.text in out  # the partial text stays in the cell
    run(ip, "%%ask -n 4 -o b\nstill there?")
    assert ip.user_ns["b"].n_tokens == 4


def test_partial_answer_counts_every_token_it_shows(ip, monkeypatch):
    """The count of a cancelled answer is the tokens it showed, the last one included."""
    from llm_magic.ipython.cell_output import StreamDisplay

    shown = []
    real_add = StreamDisplay.add
    monkeypatch.setattr(StreamDisplay, "add", lambda self, chunk: (shown.append(chunk), real_add(self, chunk))[1])
    watcher = interrupt_after(5)
    _, out = run(ip, "%%ask -n 100000 -t 60 -o a\nTalk")
    watcher.join()
    a = ip.user_ns["a"]
    assert a.finish_reason == "cancelled" and "".join(shown) == a.text
    assert a.n_tokens == len(shown)  # each chunk of the tiny model is one token
    assert f"partial answer, {len(shown)} tokens" in out


# ---- -f: what the cell shows ------------------------------------------------------------------------


def ask_in_notebook(ip, monkeypatch, cell):
    """Run an ask as in a notebook (the shell has a kernel): returns the display outputs."""
    from IPython.utils.capture import capture_output

    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    with capture_output() as captured:
        ip.run_cell(cell)
    return captured.outputs


def test_markdown_answer_streams_and_ends_as_text_and_html(ip, monkeypatch):
    outputs = ask_in_notebook(ip, monkeypatch, "%%ask -n 12 --temperature 0 -o a\nhi")
    a = ip.user_ns["a"]
    final = outputs[-1].data
    assert set(final) == {"text/plain", "text/html"}  # no text/markdown: the HTML is ours, sanitized
    assert final["text/plain"] == f"{a.text}\n\n[stopped at max_tokens (12 tokens)]"
    assert final["text/html"] == llm_magic.rendering.answer_html(a.text, a.marker())
    # every update before it: the same renderer (HTML) with the cursor, or a status; never empty
    assert outputs[0].data == {"text/plain": "▌", "text/html": "<p>▌</p>\n"}
    for o in outputs[:-1]:
        plain, html = o.data["text/plain"], o.data["text/html"]
        if plain.endswith("▌"):
            assert html == llm_magic.rendering.interim_html(plain[:-1])
        else:
            assert plain.startswith("[") and html == llm_magic.rendering.status_html(plain[1:-1])


def test_a_whitespace_answer_says_empty_answer(ip, monkeypatch, tmp_path):
    grammar = tmp_path / "blank.gbnf"
    grammar.write_text('root ::= "\\n \\n"\n')
    _, out = run(ip, f"%%ask --grammar {grammar} -n 50 -o a\nsay nothing")
    assert ip.user_ns["a"].text == "\n \n" and out.endswith("\n[empty answer]\n")
    outputs = ask_in_notebook(ip, monkeypatch, f"%%ask --grammar {grammar} -n 50\nsay nothing")
    final = outputs[-1].data
    assert final["text/plain"] == "[empty answer]" and ">[empty answer]</p>" in final["text/html"]


def test_a_long_prompt_shows_reading_the_prompt_before_the_answer(ip, monkeypatch, tiny_model):
    run(ip, f"%config AskMagics.models = {{'batched': {{'path': {tiny_model!r}, 'n_batch': 32}}}}")
    run(ip, "%ask -m batched -n 1 loaded")  # no load status: the first batch is the first status
    outputs = ask_in_notebook(ip, monkeypatch, "%%ask -m batched -n 5 -o a\n" + "the capital of France " * 60)
    a = ip.user_ns["a"]
    total = a.n_prompt_evaluated
    assert total > 200
    shown = [o.data["text/plain"] for o in outputs]
    first_text = next(i for i, t in enumerate(shown) if t.endswith("▌") and t != "▌")
    progress = [t for t in shown[:first_text] if t.startswith("[reading the prompt ")]
    # the first batch at once; the others as the throttle lets them through (this model is fast)
    assert progress[0] == f"[reading the prompt 0 / {total:,} tokens]", shown
    done = [int(t.split()[3].replace(",", "")) for t in progress]
    assert done == sorted(done) and all(t.endswith(f" / {total:,} tokens]") for t in progress)
    assert not any("reading the prompt" in t for t in shown[first_text:])


def test_text_format_has_no_html(ip, monkeypatch):
    outputs = ask_in_notebook(ip, monkeypatch, "%%ask -f text -n 3 -o a\n**hi**")
    a = ip.user_ns["a"]
    assert a.n_tokens == 3
    assert set(outputs[-1].data) == {"text/plain"}
    assert outputs[-1].data["text/plain"].startswith(a.text)


# ---- the extension's life cycle ---------------------------------------------------------------------


def test_load_ext_returns_while_slow_preload_runs_and_first_ask_waits_for_it(
    shell, use_model, monkeypatch, llama_constructions
):
    real = cache_mod.load_engine
    monkeypatch.setattr(cache_mod, "load_engine", lambda spec, abort=None: (time.sleep(1.5), real(spec, abort))[1])
    t0 = time.monotonic()
    shell.run_line_magic("load_ext", "llm_magic")
    assert time.monotonic() - t0 < 1.0
    [entry] = runtime.get().cache.entries()
    assert entry.state == "loading"
    run(shell, "%%ask -n 3 -o a\nhi")
    a = shell.user_ns["a"]
    assert 0.8 < a.load_wait_s < 10
    assert llama_constructions["n"] == 1  # the ask used the preload, it did not start another
    assert entry.state == "ready" and entry.uses == 1


def test_unload_ext_closes_models_and_stops_threads(shell, use_model):
    shell.run_line_magic("load_ext", "llm_magic")
    run(shell, "%%ask -n 3\nhi")
    models = [e.model for e in runtime.get().cache.entries()]
    assert models and llm_threads()
    shell.run_line_magic("unload_ext", "llm_magic")
    assert all(m.closed for m in models)
    assert llm_threads() == []
    assert "ask" not in shell.magics_manager.magics["cell"]
    assert "ask" not in shell.magics_manager.magics["line"] and "llm" not in shell.magics_manager.magics["line"]


def test_reload_ext_leaves_nothing_behind(shell, use_model):
    shell.run_line_magic("load_ext", "llm_magic")
    run(shell, "%%ask -n 3\nhi")
    old = [e.model for e in runtime.get().cache.entries()]
    shell.run_line_magic("reload_ext", "llm_magic")
    assert all(m.closed for m in old)
    run(shell, "%%ask -n 3 -o a\nhi")
    assert shell.user_ns["a"].n_tokens == 3
    assert len(runtime.get().cache.entries()) == 1
    assert sum(type(c).__name__ == "AskMagics" for c in shell.configurables) == 1
    assert len(shell.events.callbacks["post_run_cell"]) == len(
        set(shell.events.callbacks["post_run_cell"])
    )  # the error listener is registered once
    shell.run_line_magic("unload_ext", "llm_magic")
    assert llm_threads() == []


def test_unload_ext_removes_config_listener_and_transformer(shell, use_model):
    listeners_before = list(shell.events.callbacks["post_run_cell"])
    shell.run_line_magic("load_ext", "llm_magic")
    shell.run_line_magic("reload_ext", "llm_magic")
    assert sum(type(c).__name__ == "AskMagics" for c in shell.configurables) == 1
    names = [getattr(t, "__name__", "") for t in shell.input_transformers_cleanup]
    assert names.count("ask_line_transformer") == 1
    shell.run_line_magic("unload_ext", "llm_magic")
    assert not any(type(c).__name__ == "AskMagics" for c in shell.configurables)
    assert not any(getattr(t, "__name__", "") == "ask_line_transformer" for t in shell.input_transformers_cleanup)
    assert shell.events.callbacks["post_run_cell"] == listeners_before


# ---- config traits through the magics ---------------------------------------------------------------


def test_config_traits(ip, tiny_model):
    run(ip, "%config AskMagics.max_tokens = 7")
    run(ip, f"%config AskMagics.models = {{'tiny': {{'path': {tiny_model!r}, 'n_ctx': 256}}}}")
    run(ip, "%%ask -m tiny -o a\nhi")
    assert ip.user_ns["a"].n_tokens == 7 and ip.user_ns["a"].model == "tiny"
    assert [m["n_ctx"] for m in llm_magic.models() if m["name"] == "tiny"] == [256]
    # traitlets refuses bad values (%config shows the error, one line); the old value stays in force
    _, out = run(ip, "%config AskMagics.timeout = 0")
    assert out == "ERROR:root:AskMagics.timeout must be > 0 seconds, got 0.0\n"
    assert llm_magic.current_settings().timeout == 120
    _, out = run(ip, f"%config AskMagics.models = {{'x': {{'path': {tiny_model!r}, 'ctx': 1}}}}")
    assert "unknown option(s) ctx; valid keys: path" in out and "Traceback" not in out
    assert set(llm_magic.current_settings().models) == {"tiny"}


def test_models_trait_validates_keys_and_types(ip, tiny_model):
    _, out = run(ip, f"%config AskMagics.models = {{'a': {{'path': {tiny_model!r}, 'ctx': 5}}}}")
    assert "unknown option(s) ctx; valid keys: path, n_ctx" in out
    _, out = run(ip, f"%config AskMagics.models = {{'a': {{'path': {tiny_model!r}, 'n_ctx': 'big'}}}}")
    assert "n_ctx must be a int, got 'big'" in out
    assert "a" not in llm_magic.current_settings().models


def test_the_settings_object_is_the_magics(ip):
    from llm_magic.ipython.magics import AskMagics

    s = llm_magic.current_settings()
    assert isinstance(s, AskMagics) and ip.magics_manager.registry["AskMagics"] is s


# ---- help and usage errors --------------------------------------------------------------------------


def test_ask_help(ip):
    _, out = run(ip, "%%ask?\n")
    for option in ("--timeout", "--max-tokens", "--format", "--output", "--conversation", "--no-interpolate"):
        assert option in out
    assert "Ask a language model" in out


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%%ask\n   \n", "prompt is empty"),
        ("%ask", "prompt is empty"),
        ("%%ask --bogus\nhi", "unknown option --bogus"),
        ("%%ask -t 0\nhi", "timeout must be a positive"),
        ("%%ask -t -5\nhi", "timeout must be a positive"),
        ("%%ask -n 0\nhi", "max_tokens must be a positive"),
        ("%%ask -t abc\nhi", "invalid float value"),
        ("%%ask -o 1x\nhi", "-o needs a variable name"),
        ("%%ask -m /no/such/model.gguf\nhi", "model file not found: /no/such/model.gguf"),
    ],
)
def test_bad_input_is_a_usage_error(ip, cell, message):
    error, out = run_error(ip, cell)
    assert isinstance(error, UsageError), out
    assert message in str(error) and "\n" not in str(error)
    assert "Traceback" not in out
    run(ip, "%%ask -n 2 -o ok\nstill alive")
    assert ip.user_ns["ok"].n_tokens == 2


def test_no_model_configured_is_a_usage_error(ip, monkeypatch):
    monkeypatch.delenv(ENV_MODEL)
    monkeypatch.setattr("llm_magic.default_model.is_installed", lambda: False)
    error, out = run_error(ip, "%%ask\nhi")
    assert isinstance(error, UsageError) and "Traceback" not in out
    for hint in ("LLM_MAGIC_MODEL", "%config AskMagics.model", "default-model"):
        assert hint in str(error)


@pytest.mark.parametrize(("kind", "reason"), [("not_gguf", "not a GGUF file"), ("truncated", "truncated")])
def test_corrupt_model_is_a_usage_error(ip, corrupt_files, kind, reason):
    error, _ = run_error(ip, f"%%ask -m {corrupt_files[kind]}\nhi")
    assert isinstance(error, UsageError) and reason in str(error) and str(corrupt_files[kind]) in str(error)
    run(ip, "%%ask -n 2 -o ok\nother models keep working")
    assert ip.user_ns["ok"].n_tokens == 2


def test_prompt_too_long_is_a_usage_error(ip, tiny_model):
    run(ip, f"%config AskMagics.models = {{'small': {{'path': {tiny_model!r}, 'n_ctx': 64}}}}")
    error, out = run_error(ip, "%%ask -m small\n" + "word " * 300)
    assert isinstance(error, UsageError) and "context window" in str(error) and "is 64 (n_ctx)" in str(error)
    assert out.startswith("[no answer]\nUsageError: the prompt is") and "empty answer" not in out


# ---- conversations: -c NAME and --chat ---------------------------------------------------------------


def test_conversation_follow_up_evaluates_only_new_tokens(ip):
    import llama_cpp

    from llm_magic.engines.llama_private import native_context

    run(ip, "%%ask -c trip -n 30 --temperature 0 -o t1\nWe plan a trip to Paris in May.")
    t1 = ip.user_ns["t1"]
    ctx = native_context(runtime.get().cache.entries()[0].model.llm)
    llama_cpp.llama_perf_context_reset(ctx)
    run(ip, "%%ask -c trip -n 30 --temperature 0 -o t2\nWhat should we pack?")
    t2 = ip.user_ns["t2"]
    perf = llama_cpp.llama_perf_context(ctx)  # llama.cpp's own counters for turn 2
    assert perf.n_p_eval == t2.n_prompt_evaluated  # prompt tokens llama.cpp evaluated in batches
    assert perf.n_p_eval < 25 < t2.n_prompt_tokens  # the new turn only, not the history
    assert t2.n_prompt_tokens > t1.n_prompt_tokens + t1.n_tokens - 2
    new_tokens = t2.n_prompt_tokens - (t1.n_prompt_tokens + t1.n_tokens - 1)
    assert t2.n_prompt_evaluated <= new_tokens + 2  # about the new turn only
    # the model evaluated both turns, the first with its answer, as one Q/A prompt
    # (detokenizing the whole sequence may space the tokens of the answer a little differently)
    prompt = evaluated_prompt(t2)
    assert prompt.startswith("Q: We plan a trip to Paris in May.\nA:")
    assert " ".join(t1.text.split()) in " ".join(prompt.split())
    assert prompt.endswith("\nQ: What should we pack?\nA:")
    [conv] = conversations().find("trip")
    assert [t.user for t in conv.turns] == ["We plan a trip to Paris in May.", "What should we pack?"]
    assert [t.answer for t in conv.turns] == [t1.text, t2.text]


def test_conversation_keeps_its_kv_state_while_other_requests_run(ip):
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t1\nFirst question here.")
    held = len(conversations().find("a")[0].ctx_tokens)  # what a's turn left in the KV cache
    run(ip, "%%ask -n 5\nsomething else entirely")  # another request takes the KV cache over
    run(ip, "%%ask -c b -n 5 --temperature 0\nAnother conversation.")
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t2\nSecond question.")
    t2 = ip.user_ns["t2"]
    assert held > 20 and t2.n_prompt_evaluated == t2.n_prompt_tokens - held  # only the new turn: a's state came back
    assert "Q: First question here." in evaluated_prompt(t2)
    [row] = llm_magic.models()
    assert row["kv_states"] == 1 and row["kv_bytes"] > 0  # b's state is the one kept now


def test_conversation_without_saved_state_evaluates_everything(ip):
    run(ip, "%config AskMagics.kv_cache_budget = 0")  # keep no saved states
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t1\nFirst question here.")
    run(ip, "%%ask -n 5\nsomething else entirely")  # another request overwrites the KV cache
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t2\nSecond question.")
    t2 = ip.user_ns["t2"]
    assert t2.n_prompt_evaluated > t2.n_prompt_tokens // 2  # the shared prefix had to be evaluated again
    assert "Q: First question here." in evaluated_prompt(t2)


def test_chat_flag_uses_the_default_conversation_on_a_chat_model(ip, chat_model):
    run(ip, f"%%ask -m {chat_model} --chat -n 10 --temperature 0 -o a\nHello there")
    run(ip, f"%%ask -m {chat_model} --chat -n 10 --temperature 0 -o b\nAnd again")
    [conv] = conversations().find(conversation.DEFAULT)
    assert [t.user for t in conv.turns] == ["Hello there", "And again"]
    b = ip.user_ns["b"]
    assert b.n_prompt_evaluated < b.n_prompt_tokens // 2
    model = next(e for e in runtime.get().cache.entries() if e.spec.path == chat_model).model
    text = model.llm.detokenize(conv.ctx_tokens, special=True).decode().replace(" ", "")
    assert text.count("<|im_start|>user") == 2 and "Hello" in text
    assert (
        evaluated_prompt(b, special=True)
        .replace(" ", "")
        .endswith("<|im_start|>user\nAndagain<|im_end|>\n<|im_start|>assistant\n")
    )


def test_conversations_are_kept_per_model(ip, tiny_model_b):
    run(ip, "%%ask -c x -n 5\none")
    run(ip, f"%%ask -m {tiny_model_b} -c x -n 5\ntwo")
    found = conversations().find("x")
    assert len(found) == 2 and sorted(c.turns[0].user for c in found) == ["one", "two"]
    assert sorted(c.model_name for c in found) == ["tiny-b.gguf", "tiny.gguf"]


def test_history_is_trimmed_to_fit_the_context(ip, tiny_model):
    run(ip, f"%config AskMagics.models = {{'small': {{'path': {tiny_model!r}, 'n_ctx': 256}}}}")
    for i in range(6):
        run(ip, f"%%ask -m small -c long -n 40 --temperature 0\nQuestion number {i} about the capital of France")
    [conv] = conversations().find("long")
    assert conv.trimmed > 0 and len(conv.turns) < 6 and conv.trimmed + len(conv.turns) == 6
    assert conv.turns[-1].user == "Question number 5 about the capital of France"
    last = llm_magic.last_answer()
    assert last.n_prompt_tokens + 40 <= 256
    assert not evaluated_prompt(last).startswith("Q: Question number 0")  # the oldest turns are gone


# ---- per-call sampling options ------------------------------------------------------------------------


@pytest.fixture
def completion_kwargs(monkeypatch):
    """The sampling values the engine handed to llama.cpp's native sampler constructors (spies:
    the real samplers are still built), by option name."""
    import llama_cpp

    seen: dict = {}
    constructors = {
        "llama_sampler_init_temp": lambda t: {"temperature": round(t, 6)},
        "llama_sampler_init_top_k": lambda k: {"top_k": k},
        "llama_sampler_init_top_p": lambda p, _keep: {"top_p": round(p, 6)},
        "llama_sampler_init_min_p": lambda p, _keep: {"min_p": round(p, 6)},
        "llama_sampler_init_dist": lambda seed: {"seed": seed},
        "llama_sampler_init_penalties": lambda *a: dict(
            zip(("repeat_penalty", "frequency_penalty", "presence_penalty"), (round(x, 6) for x in a[-3:]), strict=True)
        ),
    }
    for name, record in constructors.items():
        real = getattr(llama_cpp, name)

        def spy(*args, _real=real, _record=record):
            seen.update(_record(*args))
            return _real(*args)

        monkeypatch.setattr(llama_cpp, name, spy)
    return seen


def test_per_call_sampling_options_reach_the_engine(ip, completion_kwargs):
    run(
        ip,
        "%%ask -n 5 --temperature 0.3 --top-p 0.5 --top-k 7 --repeat-penalty 1.3 --seed 9 "
        '--stop "zz top" --stop "\\nEND" --system "Be brief." -o a\nhi',
    )
    seen = completion_kwargs
    assert (seen["temperature"], seen["top_p"], seen["top_k"], seen["repeat_penalty"], seen["seed"]) == (
        0.3,
        0.5,
        7,
        1.3,
        9,
    )
    assert evaluated_prompt(ip.user_ns["a"]) == "Be brief.\n\nQ: hi\nA:"


def test_penalty_flags_reach_the_request(ip, monkeypatch):
    from llm_magic import request

    seen: list[dict] = []
    real = request.resolve_options

    def spy(*args, **kwargs):
        options = real(*args, **kwargs)
        seen.append(options.sampling)
        return options

    monkeypatch.setattr(request, "resolve_options", spy)
    run(ip, "%%ask -n 3 --frequency-penalty 0.5 --presence-penalty -0.25\nhi")
    assert (seen[-1]["frequency_penalty"], seen[-1]["presence_penalty"]) == (0.5, -0.25)
    run(ip, "%config AskMagics.presence_penalty = 0.75")
    run(ip, "%%ask -n 3\nhi")
    assert (seen[-1]["frequency_penalty"], seen[-1]["presence_penalty"]) == (0.0, 0.75)


def test_stop_option_cuts_the_answer(ip):
    run(ip, "%%ask -n 60 --temperature 0 -o full\nhi")
    full = ip.user_ns["full"].text
    word = next(w for w in full.split()[2:] if len(w) > 2)
    cut = full.index(word)
    run(ip, f'%%ask -n 60 --temperature 0 --stop "{word}" -o a\nhi')
    a = ip.user_ns["a"]
    assert a.text == full[:cut] and a.finish_reason == "stop"


def test_sampling_defaults_are_traits(ip, completion_kwargs):
    for line in (
        "AskMagics.temperature = 0.2",
        "AskMagics.top_p = 0.6",
        "AskMagics.top_k = 3",
        "AskMagics.repeat_penalty = 1.2",
        "AskMagics.seed = 5",
        "AskMagics.system = 'Sys.'",
        "AskMagics.stop = ['qqq']",
    ):
        run(ip, f"%config {line}")
    run(ip, "%%ask -n 3 -o a\nhi")
    seen = completion_kwargs
    assert (seen["temperature"], seen["top_p"], seen["top_k"], seen["repeat_penalty"], seen["seed"]) == (
        0.2,
        0.6,
        3,
        1.2,
        5,
    )
    assert llm_magic.current_settings().stop == ["qqq"]
    assert evaluated_prompt(ip.user_ns["a"]) == "Sys.\n\nQ: hi\nA:"


def test_seed_makes_answers_repeatable(ip):
    run(ip, "%%ask -n 20 --temperature 0.9 --seed 3 -o a\nhello")
    run(ip, "%%ask -n 20 --temperature 0.9 --seed 3 -o b\nhello")
    run(ip, "%%ask -n 20 --temperature 0.9 --seed 4 -o c\nhello")
    a, b, c = (ip.user_ns[k] for k in "abc")
    assert a == b and a.n_tokens == b.n_tokens == 20
    assert c != a  # another seed samples another answer


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--top-p 0", "top_p"),
        ("--top-p 1.5", "top_p"),
        ("--top-k -1", "top_k"),
        ("--repeat-penalty 0", "repeat_penalty"),
        ("--frequency-penalty nan", "frequency_penalty must be a finite number"),
        ("--presence-penalty inf", "presence_penalty must be a finite number"),
        ("--temperature -1", "temperature"),
        ("-f yaml", "invalid choice"),
    ],
)
def test_bad_sampling_flags(ip, flags, message):
    error, out = run_error(ip, f"%%ask {flags}\nhi")
    assert isinstance(error, UsageError) and message in str(error) and "Traceback" not in out


def test_the_line_under_a_failed_ask():
    from llm_magic.errors import ConfigError
    from llm_magic.ipython.magics import _failure_marker

    assert _failure_marker(RuntimeError("boom"), "partial") == "error — RuntimeError: boom"
    assert _failure_marker(KeyboardInterrupt(), "") == "error — KeyboardInterrupt"
    assert _failure_marker(ConfigError("bad"), "") == "no answer"  # the error itself follows in the cell
    assert _failure_marker(ConfigError("bad"), "some text") is None
