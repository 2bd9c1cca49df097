"""Every chat template llama.cpp ships (vendored in the llama-cpp-python sdist, ``models/templates``),
each put into a tiny real GGUF whose tokenizer has the template's markers as special tokens, then
asked as a user would: a plain question, one with ``--system``, and a three-turn conversation
that reuses the KV cache. Plus the sandbox and the errors of ``llm_magic.chat_templates``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import llama_templates
import pytest
from llama_templates import template_model

import llm_magic
from llm_magic import runtime
from llm_magic.chat_templates import ChatTemplate, ChatTemplateError, merge_system, template_id

from conftest import evaluated_prompt, evaluated_tokens, run, run_error
from tiny_gguf import write_tiny_model

TEMPLATES, WHY_NONE = llama_templates.TEMPLATES, llama_templates.WHY_NONE
RAN: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _say_how_many(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TEMPLATES:
        with capture.global_and_fixture_disabled():  # said on the terminal, not into captured output
            reporter.write_line(f"\nllama.cpp chat templates: {len(RAN)} of {len(TEMPLATES)} ran every check")


@pytest.mark.skipif(not TEMPLATES and not os.environ.get("CI"), reason=f"llama.cpp's templates: {WHY_NONE}")
def test_the_vendored_templates_are_there():
    """In CI the sdist is always fetched (the registries are reachable): no template may go missing."""
    assert len(TEMPLATES) >= 60, WHY_NONE or f"only {len(TEMPLATES)} templates"


@pytest.mark.skipif(not TEMPLATES, reason=f"llama.cpp's templates: {WHY_NONE}")
@pytest.mark.parametrize("path", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_every_llama_cpp_template(path: Path, tmp_path_factory, monkeypatch):
    model, specials, bos = template_model(path, tmp_path_factory.mktemp("templates"))
    name = str(model)
    llm_magic.current_settings().n_ctx = 8192
    question = "What is the capital of France?"

    # a plain ask
    plain = llm_magic.ask(question, model=name, max_tokens=6, temperature=0, timeout=60)
    assert plain.finish_reason in ("stop", "length"), plain.error
    prompt = evaluated_prompt(plain, special=True)
    assert "capital of France" in prompt
    [entry] = runtime.get().cache.find(plain.model)
    bos_id = entry.model.llm.token_bos()
    tokens = evaluated_tokens(plain)
    assert tokens[:2] != [bos_id, bos_id], f"BOS doubled: {prompt[:80]!r}"
    assert prompt.count(bos) <= max(1, ChatTemplate(path.read_text()).source.count(bos)), "BOS doubled"
    assert not any(s in plain for s in specials if len(s) > 3), f"a marker leaked into {plain!r}"
    assert entry.model.info()["chat_template"] == template_id(path.read_text())
    # a template that can switch thinking on or off has markers we know: the thinking is kept apart
    if entry.model._chat.can_switch_thinking():
        assert entry.model.thinking_tags is not None, f"{path.stem} thinks, but in markers we do not know"

    # --system: as a system turn, or merged into the first user turn
    system = "Answer in one word."
    with_system = llm_magic.ask(question, model=name, system=system, max_tokens=6, temperature=0, timeout=60)
    assert with_system.finish_reason in ("stop", "length"), with_system.error
    prompt = evaluated_prompt(with_system, special=True)
    assert system in prompt and "capital of France" in prompt

    # three turns of a conversation: each turn reuses what the KV cache holds
    conv = f"c-{path.stem}"
    turns = [question, "And of Italy?", "Which one is larger?"]
    answers = [llm_magic.ask(t, model=name, conversation=conv, max_tokens=6, temperature=0, timeout=60) for t in turns]
    for a in answers:
        assert a.finish_reason in ("stop", "length"), a.error
    last = evaluated_prompt(answers[2], special=True)
    assert all(t in last for t in turns), last[-300:]
    for a in answers[1:]:
        assert 0 < a.n_prompt_evaluated < a.n_prompt_tokens, (a.n_prompt_evaluated, a.n_prompt_tokens)
    RAN.append(path.stem)


# ---- the environment and the errors, on their own -----------------------------------------------


def test_jinja_features_templates_use_work_in_the_sandbox():
    source = (
        "{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{{ m.content }}|{% if ns.n > 5 %}{% break %}{% endif %}{% endfor %}"
        "{{ messages[0] | tojson }}|{{ {'b': 1, 'a': '<é>'} | tojson(indent=None) }}|"
        "{{ strftime_now('%Y') }}|{{ 'x' + undefined_thing }}"
        "{% generation %}G{% endgeneration %}"
    )
    text = ChatTemplate(source).render([{"role": "user", "content": "hi"}, {"role": "skip", "content": "no"}])
    year = __import__("datetime").date.today().year
    assert text == f'hi|{{"role": "user", "content": "hi"}}|{{"b": 1, "a": "<é>"}}|{year}|xG'


def test_the_sandbox_refuses_python_internals_and_mutation():
    with pytest.raises(ChatTemplateError, match="tiny: its chat template failed: SecurityError"):
        ChatTemplate("{{ messages.__class__.__mro__ }}", model="tiny").render([{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="SecurityError"):
        ChatTemplate("{{ messages.append(1) }}", model="tiny").render([{"role": "user", "content": "x"}])


def test_a_template_without_a_system_role_gets_the_system_prompt_merged():
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    )
    template = ChatTemplate(source)
    assert not template.system_role
    text = template.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<user>Be brief.\nHi"
    assert merge_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def test_a_template_that_raises_is_one_line_naming_the_model_and_its_message(tmp_path, shell, monkeypatch):
    source = "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    model = write_tiny_model(tmp_path / "strict.gguf", chat_template=source)
    with pytest.raises(ChatTemplateError) as info:
        llm_magic.ask("Hi", model=str(model), max_tokens=3)
    message = str(info.value)
    assert message == (
        "strict.gguf: its chat template failed: Conversation roles must alternate user/assistant/user/assistant/..."
    )
    shell.run_line_magic("load_ext", "llm_magic")
    error, output = run_error(shell, f"%%ask -m {model}\nHi")
    assert type(error).__name__ == "UsageError" and str(error) == message
    assert "Traceback" not in output


def test_a_template_that_does_not_compile_is_one_line(tmp_path):
    model = write_tiny_model(tmp_path / "broken.gguf", chat_template="{% for m in messages %}{{ m.content }")
    with pytest.raises(ChatTemplateError, match=r"^broken.gguf: its chat template does not compile \(line 1\): "):
        llm_magic.ask("Hi", model=str(model), max_tokens=3)


def test_template_ids_name_the_family_and_a_short_hash():
    assert re.fullmatch(r"chatml [0-9a-f]{8}", template_id("<|im_start|>{{ m }}"))
    assert re.fullmatch(r"template [0-9a-f]{8}", template_id("{{ messages }}"))
    assert template_id("a") != template_id("b")


@pytest.mark.skipif(
    llama_templates.template_path("google-gemma-2-2b-it") is None, reason=f"Gemma 2's template: {WHY_NONE}"
)
def test_gemma_2_gets_the_system_prompt_in_its_first_user_turn(tmp_path, ip):
    path = llama_templates.template_path("google-gemma-2-2b-it")
    assert path is not None
    model, _, _ = template_model(path, tmp_path)
    run(ip, f"%%ask -m {model} --system 'Answer in one word.' -n 3 -o a\nWhat is the capital of France?")
    prompt = evaluated_prompt(ip.user_ns["a"], special=True)
    assert prompt == (
        "<s><start_of_turn>user\nAnswer in one word.\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
