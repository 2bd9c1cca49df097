"""llm_magic.ipython.session_commands: %llm history, reset, explain, panel, help."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import llm_magic
from llm_magic import runtime
from llm_magic.ask_panel import AskPanel

from conftest import LONG_CTX, run, run_error


def test_reset_and_history(ip):
    _, out = run(ip, "%llm history")
    assert out.strip() == "no conversations yet (%%ask -c NAME or --chat)"
    run(ip, "%%ask -c one -n 3 -o a\nhi")
    run(ip, "%%ask --chat -n 3 -o b\nhello")
    a, b = ip.user_ns["a"], ip.user_ns["b"]
    _, out = run(ip, "%llm history")
    assert "conversation 'one' on tiny.gguf: 1 turn" in out and "conversation 'default' on tiny.gguf: 1 turn" in out
    assert "  [1] user: hi\n" in out and f"      assistant: {a.text.strip()}\n" in out
    assert "  [1] user: hello\n" in out and f"      assistant: {b.text.strip()}\n" in out
    _, out = run(ip, "%llm history one")
    assert "'default'" not in out and "'one'" in out
    _, out = run(ip, "%llm reset one")
    assert out.strip() == "forgot conversation 'one' (1 on 1 model)"
    _, out = run(ip, "%llm history one")
    assert out.strip() == "no conversation 'one' yet"
    _, out = run(ip, "%llm reset one")
    assert out.strip() == "no conversation 'one' to forget"
    _, out = run(ip, "%llm reset")
    assert out.strip() == "forgot all conversations (1 on 1 model)"
    assert runtime.get().conversations.find() == []


def test_history_marks_partial_turns_and_the_system_prompt(ip):
    run(ip, f"%config AskMagics.n_ctx = {LONG_CTX}")  # a window the tiny model cannot fill in 1 s
    run(ip, "%%ask -c s --system 'Be terse.' -t 1 -n 100000 -o a\ntalk")
    assert ip.user_ns["a"].finish_reason == "timeout"
    _, out = run(ip, "%llm history s")
    assert "  system: Be terse.\n" in out and "      assistant [timeout]: " in out


def test_history_and_reset_names_are_not_var_expanded(ip):
    ip.user_ns["x"] = "EXPANDED"
    run(ip, "%%ask -c {1+1} -n 2\nhi")
    run(ip, "%%ask -c 2 -n 2\nhi")  # what {1+1} would expand to
    _, out = run(ip, "%llm history {1+1}")
    assert "conversation '{1+1}' on tiny.gguf: 1 turn" in out and "'2'" not in out
    _, out = run(ip, "%llm history $x")
    assert out.strip() == "no conversation '$x' yet"
    _, out = run(ip, "%llm reset {1+1}")
    assert out.strip() == "forgot conversation '{1+1}' (1 on 1 model)"
    assert [c.name for c in runtime.get().conversations.find()] == ["2"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%llm history a b", "usage: %llm history [NAME]"),
        ("%llm reset a b", "usage: %llm reset [NAME]"),
        ("%llm panel now", "usage: %llm panel"),
        ("%llm explain", "no error to explain yet"),
    ],
)
def test_session_command_errors(ip, line, message):
    error, out = run_error(ip, line)
    assert isinstance(error, UsageError) and message in str(error) and "Traceback" not in out


def test_explain_takes_ask_options(ip):
    run_error(ip, "1 / 0", store_history=True)
    run(ip, "%llm explain -n 3 -c why -o w")
    assert ip.user_ns["w"].n_tokens == 3
    [conv] = runtime.get().conversations.find("why")
    assert "```python\n1 / 0\n```" in conv.turns[0].user
    assert "ZeroDivisionError: division by zero" in conv.turns[0].user
    error, _ = run_error(ip, "%llm explain -n 0")
    assert isinstance(error, UsageError) and "max_tokens must be a positive" in str(error)


def test_a_mistyped_explain_does_not_replace_the_error_to_explain(ip):
    run_error(ip, "1 / 0", store_history=True)
    run_error(ip, "%llm explain -n 0", store_history=True)
    run(ip, "%llm explain -n 3 -c why")
    [conv] = runtime.get().conversations.find("why")
    assert "```python\n1 / 0\n```" in conv.turns[0].user


def test_panel_command_displays_a_panel(ip, recording_comm, monkeypatch):
    shown = []
    real = llm_magic.panel
    monkeypatch.setattr(llm_magic, "panel", lambda **kw: shown.append(real(**kw)) or shown[-1])
    with capture_output() as cap:
        ip.run_cell("%llm panel")
    [panel] = shown
    [output] = cap.outputs
    assert output.data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
    assert isinstance(panel, AskPanel) and panel.model.value == llm_magic.specs.default_model_name()
    panel.close()


def test_help_command(ip):
    _, out = run(ip, "%llm help")
    assert "%llm panel" in out and "%llm explain [ask options]" in out
