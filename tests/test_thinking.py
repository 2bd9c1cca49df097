"""Reasoning models: the thinking kept apart from the answer, in ``Answer``, the cell, the panel,
conversations, formats and markers; ``--think``/``--no-think``; a template's own end-of-turn
markers. Real tiny models carrying Qwen3's and gpt-oss's templates from llama.cpp, with a grammar
forcing them to reason (the weights are random: a grammar makes the answer known)."""

from __future__ import annotations

import json
import os
import re

import pytest
from llama_templates import WHY_NONE, template_model, template_path

import llm_magic
from llm_magic import answer_record, request
from llm_magic.thinking import GPT_OSS, Thinking, ThinkingSplitter, ThinkingTags, find_tags, join

from conftest import LONG_CTX, evaluated_prompt, run
from tiny_gguf import CHATML_TEMPLATE, write_tiny_model

THINK = ThinkingTags("<think>", "</think>")
REASONING = "The user asks about France. Its capital is Paris."
FORCED = f'root ::= "<think>\\n{REASONING}\\n</think>\\n\\nParis is the capital."'
QWEN3 = template_path("Qwen-Qwen3-0.6B")
GPT_OSS_TEMPLATE = template_path("openai-gpt-oss-120b")
needs_qwen3 = pytest.mark.skipif(
    QWEN3 is None and not os.environ.get("CI"), reason=f"Qwen3's template (llama.cpp's): {WHY_NONE}"
)


def split(pieces: list[str], tags: ThinkingTags = THINK, thinking: bool = False) -> tuple[str, str, ThinkingSplitter]:
    splitter = ThinkingSplitter(tags, thinking)
    out = [p for piece in pieces for p in splitter.feed(piece)] + splitter.flush()
    answer, thought = join(out)
    return answer, thought, splitter


# ---- the splitter, on its own ---------------------------------------------------------------------


def test_the_splitter_finds_markers_split_across_pieces():
    text = "<think>\nLet me see.\n</think>\n\nParis."
    for size in (1, 2, 3, 5, len(text)):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        answer, thought, splitter = split(pieces)
        assert (answer, thought) == ("Paris.", "Let me see."), size
        assert not splitter.thinking


def test_thinking_pieces_are_marked_and_answer_pieces_are_plain():
    splitter = ThinkingSplitter(THINK)
    out = splitter.feed("<think>a") + splitter.feed("b</think>c")
    assert [(type(p).__name__, p) for p in out] == [("Thinking", "a"), ("Thinking", "b"), ("str", "c")]
    assert isinstance(out[0], Thinking)


def test_a_prompt_that_opens_the_thinking_starts_inside_it():
    assert THINK.starts_open("<|im_start|>assistant\n<think>\n")
    assert not THINK.starts_open("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    answer, thought, _ = split(["Hmm", ", right.", "</think>", "Yes"], thinking=True)
    assert (answer, thought) == ("Yes", "Hmm, right.")


def test_markers_after_answer_text_are_plain_text():
    answer, thought, _ = split(["Use ", "<think>", " tags</think>"])
    assert (answer, thought) == ("Use <think> tags</think>", "")


def test_an_answer_cut_inside_the_thinking_keeps_the_partial_reasoning():
    answer, thought, splitter = split(["<think>", "half a thought </th"])
    assert (answer, thought) == ("", "half a thought </th") and splitter.thinking


def test_gpt_oss_analysis_channel_and_final_header():
    text = "<|channel|>analysis<|message|>Think it over.<|end|><|start|>assistant<|channel|>final<|message|>Paris"
    for size in (1, 4, len(text)):
        answer, thought, _ = split([text[i : i + size] for i in range(0, len(text), size)], GPT_OSS)
        assert (answer, thought) == ("Paris", "Think it over."), size


def test_tags_come_from_the_template_or_the_tokenizer():
    assert find_tags("... '<think>' ... '</think>' ...") == THINK
    assert find_tags("<|channel|>analysis<|message|> ... <|end|>") == GPT_OSS
    assert find_tags("{{ messages }}", is_token=lambda t: t in ("[THINK]", "[/THINK]")) == ThinkingTags(
        "[THINK]", "[/THINK]"
    )
    assert find_tags("{{ messages }}", is_token=lambda t: False) is None


# ---- a tiny model with Qwen3's template ------------------------------------------------------------


# thinking that never ends: no point where the grammar is complete, so the end of generation is
# never allowed (with `(...)*` the model may end the answer by chance, and sometimes does)
ENDLESS = 'root ::= "<think>\\n" words\nwords ::= [a-z]+ " " words'


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory) -> str:
    if QWEN3 is None:
        pytest.fail(f"Qwen3's template is missing in CI: {WHY_NONE}")
    model, _, _ = template_model(
        QWEN3, tmp_path_factory.mktemp("qwen3"), user_tokens=("<think>", "</think>"), n_ctx_train=LONG_CTX
    )
    return str(model)


@pytest.fixture
def forced(tmp_path):
    path = tmp_path / "think.gbnf"
    path.write_text(FORCED + "\n")
    return str(path)


@needs_qwen3
def test_answer_thinking_and_token_counts(qwen3):
    answer = llm_magic.ask("What is the capital of France?", model=qwen3, grammar=FORCED, temperature=0)
    assert answer == "Paris is the capital." and answer.text == "Paris is the capital."
    assert answer.thinking == REASONING
    assert answer.finish_reason == "stop" and not answer.in_thinking and answer.marker() is None
    assert 0 < answer.thinking_tokens < answer.n_tokens


@needs_qwen3
def test_the_cell_folds_the_thinking_into_a_collapsed_details(ip, qwen3, forced, monkeypatch):
    from IPython.utils.capture import capture_output

    monkeypatch.setattr(ip, "kernel", object(), raising=False)  # as in a notebook
    with capture_output() as captured:
        ip.run_cell(f"%%ask -m {qwen3} --grammar {forced} -o a\nWhat is the capital of France?")
    shown = [o.data for o in captured.outputs]
    a = ip.user_ns["a"]
    assert a == "Paris is the capital." and a.thinking == REASONING
    final = shown[-1]["text/html"]
    details = re.search(r"<details class=\"llm-magic-thinking\"[^>]*>(.*?)</details>", final, re.S)
    assert details is not None and " open" not in final[: details.start(1)], final
    assert REASONING in details.group(1) and "<summary>Thinking (" in details.group(1)
    assert "Paris is the capital." in final[details.end() :] and REASONING not in final[details.end() :]
    assert "think&gt;" not in final and "<think>" not in final
    live = [d["text/html"] for d in shown[:-1] if "llm-magic-thinking" in d.get("text/html", "")]
    assert live and all(h.startswith('<div class="llm-magic-thinking"') for h in live if "<details" not in h)
    assert '<div class="llm-magic-thinking"' in live[0]  # streamed live as a subdued block
    assert "thinking (" in shown[-1]["text/plain"] and REASONING not in shown[-1]["text/plain"]


@needs_qwen3
def test_formats_and_output_variables_use_the_final_answer_only(ip, qwen3, tmp_path):
    grammar = tmp_path / "json.gbnf"
    grammar.write_text('root ::= "<think>\\nJSON it is.\\n</think>\\n\\n{\\"city\\": \\"Paris\\"}"\n')
    run(ip, f"%%ask -m {qwen3} --grammar {grammar} -f json -o obj\nCapital as JSON?")
    assert ip.user_ns["obj"] == {"city": "Paris"}
    code = tmp_path / "code.gbnf"
    code.write_text('root ::= "<think>\\nA loop.\\n</think>\\n\\n```python\\nprint(1)\\n```"\n')
    run(ip, f"%%ask -m {qwen3} --grammar {code} -f code -o c\nPrint one")
    assert ip.user_ns["c"] == "```python\nprint(1)\n```" and ip.user_ns["c"].thinking == "A loop."
    assert json.loads(json.dumps(ip.user_ns["obj"])) == {"city": "Paris"}


@needs_qwen3
def test_no_think_renders_qwen3s_empty_thinking_and_think_does_not(ip, qwen3):
    run(ip, f"%%ask -m {qwen3} --no-think -n 3 -o off\nHello there")
    prompt = evaluated_prompt(ip.user_ns["off"], special=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), prompt[-80:]
    run(ip, f"%%ask -m {qwen3} --think -n 3 -o on\nHello there")
    prompt = evaluated_prompt(ip.user_ns["on"], special=True)
    assert prompt.endswith("<|im_start|>assistant\n"), prompt[-80:]
    ip.run_line_magic("config", "AskMagics.think = False")  # the trait: the same as --no-think
    run(ip, f"%%ask -m {qwen3} -n 3 -o trait\nHello there")
    assert evaluated_prompt(ip.user_ns["trait"], special=True).endswith("<think>\n\n</think>\n\n")
    assert not ip.user_ns["trait"].notes


def test_no_think_on_a_model_without_the_switch_is_a_note(ip, chat_model):
    _, output = run(ip, f"%%ask -m {chat_model} --no-think -n 3 -o a\nHello")
    note = "tiny-chat.gguf cannot switch its thinking on or off: --no-think changed nothing"
    assert ip.user_ns["a"].notes == [note] and note in output
    ip.run_line_magic("config", "AskMagics.think = False")  # set for all models: no note on each ask
    run(ip, f"%%ask -m {chat_model} -n 3 -o b\nHello")
    assert not ip.user_ns["b"].notes


@needs_qwen3
def test_a_timeout_while_thinking_says_so_and_keeps_the_reasoning(ip, qwen3, tmp_path):
    endless = tmp_path / "endless.gbnf"
    endless.write_text(ENDLESS + "\n")
    llm_magic.current_settings().n_ctx = LONG_CTX  # a window it cannot fill in the time limit
    llm_magic.ask("Hi", model=qwen3, max_tokens=1)  # loaded: the time limit is for the thinking
    run(ip, f"%%ask -m {qwen3} --grammar {endless} -t 3 -n 100000 -o a\nThink forever")
    a = ip.user_ns["a"]
    assert a.finish_reason == "timeout" and a.in_thinking and a == "" and len(a.thinking) > 10
    assert a.marker().startswith("timed out after 3 s while thinking — partial reasoning, ")


@needs_qwen3
def test_stop_while_thinking_says_so_and_keeps_the_reasoning(qwen3, tmp_path):
    stream = request.Stream("Think forever", model=qwen3, grammar=ENDLESS, max_tokens=100000)
    seen = 0
    for chunk in stream:
        seen += isinstance(chunk, Thinking)
        if seen >= 20:
            stream.stop()
    a = stream.answer
    assert a.finish_reason == "cancelled" and a.in_thinking and a.thinking and a == ""
    assert a.marker().startswith("cancelled while thinking — partial reasoning, ")


@needs_qwen3
def test_a_conversation_keeps_what_qwen3_expects_and_reuses_the_kv_cache(qwen3):
    first = llm_magic.ask(
        "What is the capital of France?", model=qwen3, grammar=FORCED, conversation="q", temperature=0
    )
    second = llm_magic.ask("And of Italy?", model=qwen3, grammar=FORCED, conversation="q", temperature=0)
    third = llm_magic.ask("Which is larger?", model=qwen3, conversation="q", max_tokens=4, temperature=0)
    assert first.thinking == second.thinking == REASONING
    prompt = evaluated_prompt(third, special=True)
    assert prompt.count("Paris is the capital.") == 2 and REASONING not in prompt  # Qwen3 drops earlier thinking
    for a in (second, third):
        assert 0 < a.n_prompt_evaluated < a.n_prompt_tokens, (a.n_prompt_evaluated, a.n_prompt_tokens)


@needs_qwen3
def test_the_templates_end_of_turn_ends_the_answer(qwen3):
    answer = llm_magic.ask("Capital?", model=qwen3, grammar='root ::= "Paris<|im_end|>more text"', temperature=0)
    assert answer == "Paris" and answer.finish_reason == "stop"


@needs_qwen3
def test_status_shows_the_template(ip, qwen3):
    llm_magic.ask("Hi", model=qwen3, max_tokens=2)
    _, output = run(ip, "%llm status")
    assert re.search(r"qwen3 [0-9a-f]{8}", output), output


@needs_qwen3
def test_the_panel_folds_the_thinking_too(recording_comm, qwen3):
    from llm_magic.ask_panel import AskPanel

    panel = AskPanel(model=qwen3)
    try:
        panel.start(request.Stream("What is the capital of France?", model=qwen3, grammar=FORCED, temperature=0))
        answer = panel.wait(60)
        assert answer == "Paris is the capital." and answer.thinking == REASONING
        html = panel.answer_area.value
        assert re.search(r"<details class=\"llm-magic-thinking\"[^>]*><summary>Thinking \(\d+ tokens\)</summary>", html)
        assert REASONING in html.split("</details>")[0] and "Paris is the capital." in html.split("</details>")[1]
    finally:
        panel.close()


# ---- other reasoning shapes ------------------------------------------------------------------------


@pytest.mark.skipif(GPT_OSS_TEMPLATE is None and not os.environ.get("CI"), reason=f"gpt-oss's template: {WHY_NONE}")
def test_gpt_oss_analysis_channel_is_the_thinking(tmp_path):
    assert GPT_OSS_TEMPLATE is not None, WHY_NONE
    model, _, _ = template_model(GPT_OSS_TEMPLATE, tmp_path)
    grammar = (
        'root ::= "<|channel|>analysis<|message|>Weigh it.<|end|>"'
        ' "<|start|>assistant<|channel|>final<|message|>Paris<|return|>"'
    )
    answer = llm_magic.ask("Capital of France?", model=str(model), grammar=grammar, temperature=0)
    assert (answer.text, answer.thinking) == ("Paris", "Weigh it.")


def test_a_template_that_opens_the_thinking_and_an_alias_override(tmp_path):
    opened = CHATML_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
    assert opened != CHATML_TEMPLATE
    path = write_tiny_model(tmp_path / "r1.gguf", chat_template=opened, user_tokens=["<think>", "</think>"])
    answer = llm_magic.ask("Q?", model=str(path), grammar='root ::= "Hmm.\\n</think>\\n\\nYes."', temperature=0)
    assert (answer.text, answer.thinking) == ("Yes.", "Hmm.")
    plain = write_tiny_model(tmp_path / "plain.gguf", chat_template=CHATML_TEMPLATE)
    llm_magic.current_settings().models = {
        "custom": {"path": str(plain), "thinking_tags": ["[[", "]]"]},
        "off": {"path": str(path), "thinking_tags": []},
    }
    answer = llm_magic.ask("Q?", model="custom", grammar='root ::= "[[reason]] ok"', temperature=0)
    assert (answer.text, answer.thinking) == ("ok", "reason")
    answer = llm_magic.ask("Q?", model="off", grammar='root ::= "Hmm.</think>Yes."', temperature=0)
    assert (answer.text, answer.thinking) == ("Hmm.</think>Yes.", "")


def test_bad_thinking_tags_are_one_line(tiny_model):
    from traitlets import TraitError

    with pytest.raises(TraitError, match=r"model 'bad': thinking_tags needs an opening and a closing marker"):
        llm_magic.current_settings().models = {"bad": {"path": tiny_model, "thinking_tags": ["<t>"]}}
    with pytest.raises(TraitError, match=r"model 'bad': thinking_tags must be a list"):
        llm_magic.current_settings().models = {"bad": {"path": tiny_model, "thinking_tags": "<t>"}}


def test_the_thinking_is_sanitized_like_the_answer():
    from llm_magic.rendering import answer_html, interim_html

    evil = "<script>alert(1)</script><img src=x onerror=alert(1)> [x](javascript:alert(1))"
    for html in (
        answer_html("ok", thinking=evil, thinking_tokens=3),
        interim_html("", evil, True),
        interim_html("a", evil),
    ):
        assert "<script" not in html and "<img" not in html and 'href="javascript' not in html, html
        assert html.count("<details") + html.count('<div class="llm-magic-thinking"') == 1
    assert "<details " in answer_html("ok", thinking="t") and " open" not in answer_html("ok", thinking="t")


def test_a_terminal_shows_the_thinking_between_brackets():
    import io

    from llm_magic.ipython.cell_output import StreamDisplay

    out = io.StringIO()
    view = StreamDisplay(mode="text", out=out)
    for piece in (Thinking("Let me "), Thinking("see."), "Paris", "."):
        view.add(piece)
    view.finish()
    assert out.getvalue() == "[thinking]\nLet me see.\n[end of thinking]\n\nParis.\n"
    assert (view.text, view.thinking) == ("Paris.", "Let me see.")


@needs_qwen3
def test_replay_keeps_the_thinking_and_tells_think_from_no_think(qwen3):
    """--cache: the replayed answer has its reasoning back; --think and --no-think are different
    requests (they render different prompts), so one never replays the other."""
    first = llm_magic.ask("What is the capital of France?", model=qwen3, grammar=FORCED, temperature=0, seed=3)
    assert first.thinking == REASONING and first.log_id
    again = answer_record.replay(
        request.Stream("What is the capital of France?", model=qwen3, grammar=FORCED, temperature=0, seed=3)
    )
    assert again is not None and again.replayed
    assert again == first and again.thinking == REASONING and again.thinking_tokens == first.thinking_tokens
    switched = request.Stream(
        "What is the capital of France?", model=qwen3, grammar=FORCED, temperature=0, seed=3, think=False
    )
    assert answer_record.replay(switched) is None
