"""Issue 4: interpolation, errors and %llm explain, output formats, conversations with KV reuse,
per-call sampling options, aliases and %llm help — in a real InteractiveShell with the tiny model."""

from __future__ import annotations

import json
import logging

import pytest
from IPython.core.error import UsageError

import llm_magic
from llm_magic import config
from llm_magic import conversation as conversations
from llm_magic.cache import get_cache
from llm_magic.formats import first_code_block
from llm_magic.interpolate import interpolate

from conftest import run


def sent_prompt(ip, cell):
    """Run an ask and return the prompt text the model received (from the model's own tokens)."""
    result, out = run(ip, cell)
    assert result.success, out
    entry = get_cache().entries()[0]
    return entry.model, out


# ---- interpolation ------------------------------------------------------------------------------

def test_interpolation_rules():
    ns = {"x": 42, "name": "Ada", "In": ["", "a = 1", "b = a + 1"], "Out": {2: 3}}
    errors = {3: "Traceback ...\nZeroDivisionError: division by zero"}
    warnings = []
    text = ('Hi {name}, x={x}. d = {"a": 1}; s = {x for x in y}; f"{v}"; f"{x}"; {{x}}; {undefined_name}; '
            '{x.real} {x[0]} {In[1]} / {Out[2]} / {Err[3]} / {In[99]} {__import__("os")}')
    got = interpolate(text, user_ns=ns, errors=errors, warn=warnings.append)
    assert got.startswith("Hi Ada, x=42. ")
    for kept in ('{"a": 1}', "{x for x in y}", 'f"{v}"', 'f"{x}"', "{{x}}", "{undefined_name}", "{x.real}",
                 "{x[0]}", "{In[99]}", '{__import__("os")}'):
        assert kept in got
    assert "a = 1 / 3 / Traceback ...\nZeroDivisionError: division by zero /" in got
    assert len(warnings) == 1 and "{undefined_name}" in warnings[0] and "{In[99]}" in warnings[0]


def test_braces_in_code_are_sent_unchanged(ip, caplog):
    cell = ('%%ask --raw -n 2 -o a\n'
            'fix this: d = {"a": 1}\ns = {x for x in y}\nprint(f"{v}")\n{undefined_name}')
    result, out = run(ip, cell)
    assert result.success, out
    model = get_cache().entries()[0].model
    text = model.llm.detokenize(model.llm._input_ids[:model.llm.n_tokens].tolist()).decode()
    for kept in ('{"a": 1}', "{x for x in y}", 'f"{v}"', "{undefined_name}"):
        assert kept in text
    assert "{undefined_name}" in caplog.text and "not defined" in caplog.text


def test_variables_and_cell_references_are_filled_in(ip):
    run(ip, "city = 'Lisbon'", store_history=True)
    run(ip, "21 * 2", store_history=True)
    run(ip, "1 / 0", store_history=True)
    n = ip.execution_count
    cell = f"%%ask --raw -n 2\nCity: {{city}}. Code: {{In[{n - 2}]}}. Result: {{Out[{n - 2}]}}. Error: {{Err[{n - 1}]}}"
    result, out = run(ip, cell, store_history=True)
    assert result.success, out
    model = get_cache().entries()[0].model
    text = model.llm.detokenize(model.llm._input_ids[:model.llm.n_tokens].tolist()).decode()
    assert "City: Lisbon." in text and "Code: 21 * 2." in text and "Result: 42." in text
    assert "ZeroDivisionError: division by zero" in text and "Traceback" in text


def test_no_interpolate(ip):
    ip.user_ns["city"] = "Lisbon"
    run(ip, "%%ask --raw --no-interpolate -n 2\nCity: {city}")
    model = get_cache().entries()[0].model
    text = model.llm.detokenize(model.llm._input_ids[:model.llm.n_tokens].tolist()).decode()
    assert "{city}" in text and "Lisbon" not in text


def test_errors_are_collected_without_replacing_the_exception_handler(ip):
    assert ip.CustomTB is None or getattr(ip, "custom_exceptions", ()) == ()
    result, out = run(ip, "raise KeyError('missing')", store_history=True)
    assert not result.success and "KeyError" in out  # IPython still shows it
    assert getattr(ip, "custom_exceptions", ()) == ()


def test_explain_sends_the_last_error_with_its_source(ip):
    run(ip, "%%ask -n 2\nno error yet")
    result, out = run(ip, "%llm explain")
    assert isinstance(result.error_in_exec, UsageError) and "no error" in str(result.error_in_exec)
    run(ip, "values = [1, 2]\nvalues[5]", store_history=True)
    result, out = run(ip, "%llm explain -n 8 -o why", store_history=True)
    assert result.success, out
    assert ip.user_ns["why"].n_tokens == 8
    model = get_cache().entries()[0].model
    text = model.llm.detokenize(model.llm._input_ids[:model.llm.n_tokens].tolist()).decode()
    assert "values[5]" in text and "IndexError: list index out of range" in text
    assert "cause" in text and "fix" in text


# ---- formats ------------------------------------------------------------------------------------

def test_format_text_has_no_markdown(ip):
    from IPython.utils.capture import capture_output
    from llm_magic.display import StreamDisplay

    view = StreamDisplay(mode="notebook", markdown=False)
    with capture_output() as captured:
        view.start()
        view.add("**bold**")
        view.finish()
    assert "text/markdown" not in captured.outputs[-1].data
    result, out = run(ip, "%%ask -f text -n 3 -o a\nhi")
    assert result.success and ip.user_ns["a"].n_tokens == 3


def test_format_code_puts_the_first_fenced_block_in_the_next_cell_and_never_runs_it(ip, tmp_path):
    import builtins

    grammar = tmp_path / "code.gbnf"
    grammar.write_text(r'root ::= "Sure.\n```python\nimport builtins\nbuiltins.llm_magic_ran = 1\n```\n'
                       r'```python\nsecond = 2\n```\nDone."' + "\n")
    ip.rl_next_input = None
    result, out = run(ip, f"%%ask -f code --grammar {grammar} -n 300 -o c\nwrite code")
    assert result.success, out
    assert ip.rl_next_input == "import builtins\nbuiltins.llm_magic_ran = 1"  # the first block only
    assert not hasattr(builtins, "llm_magic_ran")  # never executed
    assert ip.user_ns["c"].finish_reason == "stop" and "Done." in ip.user_ns["c"]


def test_format_code_without_a_fence_uses_the_whole_answer(ip):
    ip.rl_next_input = None
    result, out = run(ip, "%%ask -f code -n 5 -o c\nwrite code")
    assert result.success and ip.rl_next_input == ip.user_ns["c"].text.strip()


def test_grammar_flag_errors(ip):
    result, out = run(ip, "%%ask --grammar /no/file.gbnf\nhi")
    assert isinstance(result.error_in_exec, UsageError) and "no such file" in str(result.error_in_exec)
    result, out = run(ip, "%%ask --grammar 'root ::= ('\nhi")
    assert isinstance(result.error_in_exec, UsageError) and "invalid GBNF grammar" in str(result.error_in_exec)


def test_format_json_valid(ip):
    ip.run_line_magic("config", 'AskMagics.json_grammar = \'root ::= "{\\\\"capital\\\\": \\\\"Paris\\\\", \\\\"n\\\\": [1, 2]}"\'')
    result, out = run(ip, "%%ask -f json -n 300 -o data\nCapital of France as JSON")
    assert result.success, out
    assert ip.user_ns["data"] == {"capital": "Paris", "n": [1, 2]}
    assert llm_magic.last_answer().value == {"capital": "Paris", "n": [1, 2]}


def test_format_json_invalid_is_a_clear_error_and_keeps_the_text(ip):
    ip.run_line_magic("config", 'AskMagics.json_grammar = \'root ::= "{\\\\"capital\\\\": "\'')
    result, out = run(ip, "%%ask -f json -n 40 -o data\nCapital of France as JSON")
    assert isinstance(result.error_in_exec, UsageError)
    assert "not valid JSON" in str(result.error_in_exec) and "last_answer()" in str(result.error_in_exec)
    assert "data" not in ip.user_ns
    assert llm_magic.last_answer() == '{"capital": '


def test_format_json_uses_the_json_grammar_by_default(ip):
    result, out = run(ip, "%%ask -f json -n 200 --temperature 0 -o data\nGive me JSON")
    assert result.success, out
    assert isinstance(ip.user_ns["data"], (dict, list))
    json.dumps(ip.user_ns["data"])


# ---- conversations ------------------------------------------------------------------------------

def test_conversation_follow_up_evaluates_only_new_tokens(ip):
    import llama_cpp

    run(ip, "%%ask -c trip -n 30 --temperature 0 -o t1\nWe plan a trip to Paris in May.")
    t1 = ip.user_ns["t1"]
    ctx = get_cache().entries()[0].model.llm._ctx.ctx
    llama_cpp.llama_perf_context_reset(ctx)
    run(ip, "%%ask -c trip -n 30 --temperature 0 -o t2\nWhat should we pack?")
    t2 = ip.user_ns["t2"]
    perf = llama_cpp.llama_perf_context(ctx)  # llama.cpp's own counters for turn 2
    assert perf.n_p_eval == t2.n_prompt_evaluated  # prompt tokens llama.cpp evaluated in batches
    assert perf.n_p_eval < 25 < t2.n_prompt_tokens  # the new turn only, not the history
    assert t2.n_prompt_tokens > t1.n_prompt_tokens + t1.n_tokens - 2
    new_tokens = t2.n_prompt_tokens - (t1.n_prompt_tokens + t1.n_tokens - 1)
    assert t2.n_prompt_evaluated <= new_tokens + 2  # about the new turn only
    # llama.cpp's own counter agrees: the context holds both turns
    model = get_cache().entries()[0].model
    assert model.llm.n_tokens >= t2.n_prompt_tokens
    result, out = run(ip, "%llm history trip")
    assert "We plan a trip to Paris in May." in out and "What should we pack?" in out and "2 turns" in out


def test_conversation_without_reuse_evaluates_everything(ip):
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t1\nFirst question here.")
    run(ip, "%%ask -n 5\nsomething else entirely")  # another request overwrites the KV cache
    run(ip, "%%ask -c a -n 20 --temperature 0 -o t2\nSecond question.")
    t2 = ip.user_ns["t2"]
    assert t2.n_prompt_evaluated > t2.n_prompt_tokens // 2  # the shared prefix had to be evaluated again


def test_chat_flag_uses_the_default_conversation_on_a_chat_model(ip, chat_model):
    run(ip, f"%%ask -m {chat_model} --chat -n 10 --temperature 0 -o a\nHello there")
    run(ip, f"%%ask -m {chat_model} --chat -n 10 --temperature 0 -o b\nAnd again")
    [conv] = conversations.find(conversations.DEFAULT)
    assert [t.user for t in conv.turns] == ["Hello there", "And again"]
    b = ip.user_ns["b"]
    assert b.n_prompt_evaluated < b.n_prompt_tokens // 2
    model = [e for e in get_cache().entries() if e.spec.path == chat_model][0].model
    text = model.llm.detokenize(conv.ctx_tokens, special=True).decode().replace(" ", "")
    assert text.count("<|im_start|>user") == 2 and "Hello" in text


def test_conversations_are_kept_per_model(ip, tiny_model_b):
    run(ip, "%%ask -c x -n 5\none")
    run(ip, f"%%ask -m {tiny_model_b} -c x -n 5\ntwo")
    found = conversations.find("x")
    assert len(found) == 2 and sorted(len(c.turns) for c in found) == [1, 1]


def test_history_is_trimmed_to_fit_the_context(ip, tiny_model):
    ip.run_line_magic("config", f"AskMagics.models = {{'small': {{'path': {tiny_model!r}, 'n_ctx': 256}}}}")
    for i in range(6):
        result, out = run(ip, f"%%ask -m small -c long -n 40 --temperature 0\nQuestion number {i} about the capital of France")
        assert result.success, out
    [conv] = conversations.find("long")
    assert conv.trimmed > 0 and len(conv.turns) < 6
    assert conv.turns[-1].user.endswith("Question number 5 about the capital of France")
    last = llm_magic.last_answer()
    assert last.n_prompt_tokens + 40 <= 256


def test_reset_and_history(ip):
    run(ip, "%%ask -c one -n 3\nhi")
    run(ip, "%%ask --chat -n 3\nhi")
    result, out = run(ip, "%llm history")
    assert "'one'" in out and "'default'" in out
    result, out = run(ip, "%llm reset one")
    assert "forgot conversation 'one'" in out
    result, out = run(ip, "%llm history one")
    assert "no conversation 'one'" in out
    result, out = run(ip, "%llm reset")
    assert conversations.find() == []


def test_chat_and_c_together_is_an_error(ip):
    result, out = run(ip, "%%ask -c x --chat\nhi")
    assert isinstance(result.error_in_exec, UsageError)


# ---- per-call options ---------------------------------------------------------------------------

def test_per_call_sampling_options_reach_the_engine(ip, monkeypatch):
    import llama_cpp

    seen = {}
    real = llama_cpp.Llama.create_completion

    def spy(self, *args, **kwargs):
        seen.update(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "create_completion", spy)
    result, out = run(ip, '%%ask -n 5 --temperature 0.3 --top-p 0.5 --top-k 7 --repeat-penalty 1.3 --seed 9 '
                          '--stop "zz top" --stop "\\nEND" --system "Be brief."\nhi')
    assert result.success, out
    assert (seen["temperature"], seen["top_p"], seen["top_k"], seen["repeat_penalty"], seen["seed"]) == \
        (0.3, 0.5, 7, 1.3, 9)
    model = get_cache().entries()[0].model
    text = model.llm.detokenize(model.llm._input_ids[:model.llm.n_tokens].tolist()).decode()
    assert text.lstrip().startswith("Be brief.")


def test_sampling_defaults_are_traits(ip, monkeypatch):
    import llama_cpp

    seen = {}
    real = llama_cpp.Llama.create_completion
    monkeypatch.setattr(llama_cpp.Llama, "create_completion",
                        lambda self, *a, **k: (seen.update(k), real(self, *a, **k))[1])
    for line in ("AskMagics.temperature = 0.2", "AskMagics.top_p = 0.6", "AskMagics.top_k = 3",
                 "AskMagics.repeat_penalty = 1.2", "AskMagics.seed = 5", "AskMagics.system = 'Sys.'",
                 "AskMagics.stop = ['qqq']"):
        ip.run_line_magic("config", line)
    run(ip, "%%ask -n 3\nhi")
    assert (seen["temperature"], seen["top_p"], seen["top_k"], seen["repeat_penalty"], seen["seed"]) == \
        (0.2, 0.6, 3, 1.2, 5)
    assert config.settings.stop == ["qqq"] and config.settings.system == "Sys."


def test_seed_makes_answers_repeatable(ip):
    run(ip, "%%ask -n 20 --temperature 0.9 --seed 3 -o a\nhello")
    run(ip, "%%ask -n 20 --temperature 0.9 --seed 3 -o b\nhello")
    assert ip.user_ns["a"] == ip.user_ns["b"]


@pytest.mark.parametrize("flags, message", [
    ("--top-p 0", "top_p"), ("--top-p 1.5", "top_p"), ("--top-k -1", "top_k"),
    ("--repeat-penalty 0", "repeat_penalty"), ("--temperature -1", "temperature"),
    ("-f yaml", "invalid choice"),
])
def test_bad_sampling_flags(ip, flags, message):
    result, out = run(ip, f"%%ask {flags}\nhi")
    assert isinstance(result.error_in_exec, UsageError) and message in str(result.error_in_exec)


# ---- aliases ------------------------------------------------------------------------------------

def test_alias_commands(ip, tiny_model, tmp_path):
    spaced = tmp_path / "my models" / "tiny copy.gguf"
    spaced.parent.mkdir()
    spaced.write_bytes(open(tiny_model, "rb").read())
    result, out = run(ip, f'%llm alias mine "{spaced}" --n-ctx 512 --n-batch 64 --no-mlock')
    assert result.success, out
    result, out = run(ip, "%llm aliases")
    assert "mine" in out and "tiny copy.gguf" in out and "n_ctx=512" in out and "(session)" in out
    result, out = run(ip, "%%ask -m mine -n 3 -o a\nhi")
    assert result.success and ip.user_ns["a"].model == "mine"
    info = [m for m in llm_magic.models() if m["name"] == "mine"][0]
    assert info["n_ctx"] == 512 and info["mlock"] == "off"


@pytest.mark.parametrize("line, message", [
    ("%llm alias x /no/such.gguf", "model file not found"),
    ("%llm alias x", "needs a 'path'"),
    ("%llm alias x {model} --n-cxt 5", "unrecognized arguments"),
    ("%llm alias x {model} --n-ctx -5", "n_ctx must be positive"),
])
def test_alias_errors(ip, tiny_model, line, message):
    result, out = run(ip, line.format(model=tiny_model))
    assert isinstance(result.error_in_exec, UsageError), out
    assert message in str(result.error_in_exec)


def test_models_trait_validates_keys_and_types(ip, tiny_model, caplog):
    ip.run_line_magic("config", f"AskMagics.models = {{'a': {{'path': {tiny_model!r}, 'ctx': 5}}}}")
    assert "unknown option(s) ctx; valid keys: path, n_ctx" in caplog.text
    ip.run_line_magic("config", f"AskMagics.models = {{'a': {{'path': {tiny_model!r}, 'n_ctx': 'big'}}}}")
    assert "n_ctx must be a int" in caplog.text
    assert "a" not in config.settings.models
