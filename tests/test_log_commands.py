"""%llm log [N] [--search TEXT] and %llm last [--prompt]."""

from __future__ import annotations

import llm_magic

from conftest import run, run_error


def test_log_lists_the_latest_asks_and_searches_them(ip):
    for word in ("apples", "pears", "plums"):
        run(ip, f"%%ask -n 2\nTell me about {word}")
    _, out = run(ip, "%llm log 2")
    assert out.count("\n  Q: ") == 2 and "plums" in out and "pears" in out and "apples" not in out
    assert "tiny.gguf" in out
    _, out = run(ip, "%llm log --search apple")
    assert "Tell me about apples" in out and "pears" not in out
    _, out = run(ip, "%llm log 5 --search tell about")
    assert out.count("\n  Q: ") == 3
    _, out = run(ip, "%llm log --search nothing-like-this")
    assert "no asks with" in out
    for bad in ("%llm log -3", "%llm log x", "%llm log --search", "%llm log 1 2"):
        err, _ = run_error(ip, bad)
        assert "usage: %llm log" in str(err)


def test_the_log_survives_a_restart(ip):
    run(ip, "%%ask -n 2\nremember me")
    from llm_magic import ask_log

    ask_log.close_all()  # as a new process would: a fresh connection to the same file
    _, out = run(ip, "%llm log 1")
    assert "remember me" in out


def test_last_prompt_shows_the_exact_prompt(ip):
    err, _ = run_error(ip, "%llm last")
    assert "no answer yet" in str(err)
    run(ip, "%%ask -n 2 --system 'Be brief.'\nWhat is {x}?")
    _, out = run(ip, "%llm last --prompt")
    assert out == llm_magic.last_answer().prompt + "\n"
    assert out.startswith("Be brief.\n\nQ: What is {x}?\nA:")
    _, out = run(ip, "%llm last")
    assert "tiny.gguf" in out and "tokens" in out and "--prompt" in out
    err, _ = run_error(ip, "%llm last --prompts")
    assert "usage: %llm last" in str(err)
