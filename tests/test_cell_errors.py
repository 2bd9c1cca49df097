"""llm_magic.ipython.cell_errors: errors of executed cells ({Err[n]}, %llm explain)."""

from __future__ import annotations

import types

from IPython.core.error import UsageError

import llm_magic
from llm_magic.ipython.cell_errors import CellErrors, format_exception
from llm_magic.ipython.session_commands import EXPLAIN_PROMPT

from conftest import evaluated_prompt, run, run_error


def fake_result(exc, count, source):
    """What IPython hands to post_run_cell listeners."""
    return types.SimpleNamespace(
        error_in_exec=exc, error_before_exec=None, execution_count=count, info=types.SimpleNamespace(raw_cell=source)
    )


def raised(exc_type, message):
    try:
        raise exc_type(message)
    except exc_type as e:
        return e


def test_cell_errors_keeps_the_last_errors_by_count():
    errors = CellErrors(limit=2)
    assert errors.last() is None and errors.tracebacks() == {}
    errors.post_run_cell(fake_result(None, 1, "fine"))
    errors.post_run_cell(fake_result(raised(KeyError, "a"), 2, "d['a']"))
    errors.post_run_cell(fake_result(raised(ValueError, "b"), None, "int('b')"))  # no count: after the last
    assert sorted(errors.by_count) == [2, 3]
    last = errors.last()
    assert (last.execution_count, last.source) == (3, "int('b')")
    assert last.traceback.startswith("Traceback (most recent call last):") and last.traceback.endswith("ValueError: b")
    errors.post_run_cell(fake_result(raised(ZeroDivisionError, "c"), 7, "1/0"))
    assert sorted(errors.by_count) == [3, 7]  # the oldest dropped past the limit
    assert errors.tracebacks()[7].endswith("ZeroDivisionError: c")


def test_format_exception_leaves_ipython_frames_out(ip):
    error, _ = run_error(ip, "def f():\n    return 1 / 0\nf()")
    text = format_exception(error)
    assert text.startswith("Traceback (most recent call last):") and text.endswith(
        "ZeroDivisionError: division by zero"
    )
    assert "in f" in text and "return 1 / 0" in text
    assert "IPython" not in text and "interactiveshell" not in text


def test_errors_are_collected_without_replacing_the_exception_handler(ip):
    handler = ip.CustomTB
    error, out = run_error(ip, "raise KeyError('missing')", store_history=True)
    assert isinstance(error, KeyError)
    assert "KeyError" in out and "Traceback" in out  # IPython still shows it as usual
    assert getattr(ip, "custom_exceptions", ()) == () and ip.CustomTB == handler
    last = ip.magics_manager.registry["AskMagics"].cell_errors.last()
    assert last.source == "raise KeyError('missing')" and last.traceback.endswith("KeyError: 'missing'")
    assert last.execution_count == ip.execution_count - 1


def test_explain_sends_the_last_error_with_its_source(ip):
    run(ip, "%%ask -n 2\nno error yet")
    error, out = run_error(ip, "%llm explain")
    assert isinstance(error, UsageError) and "no error to explain yet" in str(error) and "Traceback" not in out
    run_error(ip, "values = [1, 2]\nvalues[5]", store_history=True)
    run(ip, "%llm explain -n 8 -o why", store_history=True)
    why = ip.user_ns["why"]
    assert why.n_tokens == 8 and llm_magic.last_answer() is why
    last = ip.magics_manager.registry["AskMagics"].cell_errors.last()
    assert last.source == "values = [1, 2]\nvalues[5]"
    expected = EXPLAIN_PROMPT.format(source="values = [1, 2]\nvalues[5]", traceback=last.traceback)
    assert evaluated_prompt(why) == f"Q: {expected}\nA:"  # exactly the explain prompt, in the Q/A shape
    assert "IndexError: list index out of range" in expected and "cause" in expected and "fix" in expected


def test_explain_adds_the_words_after_its_options_and_does_not_interpolate(ip):
    ip.user_ns["x"] = "EXPANDED"
    run_error(ip, "d = {}\nd['{x}']", store_history=True)
    run(ip, "%llm explain -n 2 -o why in one sentence, {x} and $x")
    prompt = evaluated_prompt(ip.user_ns["why"])
    assert "d['{x}']" in prompt and "KeyError: '{x}'" in prompt  # the error's braces stay as they are
    assert prompt.endswith("\n\nin one sentence, {x} and $x\nA:")
    assert "EXPANDED" not in prompt
