"""%%ask with notebook data (llm_magic.ipython.ask_context and the magic): {name} summaries within
AskMagics.context_budget, {name!full}, --cells, the note line, metadata["llm_magic"] on the output,
and --cache / --fresh / AskMagics.cache replaying from the ask log."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import llm_magic

from conftest import run, run_error

pd = pytest.importorskip("pandas")


def ask_in_notebook(ip, monkeypatch, cell, store_history=False):
    from IPython.utils.capture import capture_output

    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    with capture_output() as captured:
        ip.run_cell(cell, store_history=store_history)
    return captured.outputs


def uses(name: str) -> int:
    return next(r["uses"] for r in llm_magic.models() if r["name"] == name)


def test_a_dataframe_is_summarised_with_every_column_and_the_cell_says_so(ip):
    rng = np.random.default_rng(1)
    ip.user_ns["df"] = pd.DataFrame(rng.random((10_000, 30)), columns=[f"col_{i:02d}" for i in range(30)])
    _, out = run(ip, "%%ask -n 2 -o a\nWhich column has the largest mean in {df}?")
    prompt = llm_magic.last_answer().prompt
    assert "pandas.DataFrame: 10,000 rows × 30 columns" in prompt
    assert all(f"col_{i:02d}: float64" in prompt for i in range(30))
    assert llm_magic.last_answer().n_prompt_tokens <= 1000 + 40  # the budget, plus the question and Q/A prompt
    notes = [line for line in out.splitlines() if "summarised to fit" in line]
    assert len(notes) == 1 and "{df}: 10,000 × 30 DataFrame" in notes[0] and "{name!full}" in notes[0]


def test_the_budget_is_a_setting_and_full_sends_the_value_whole(ip):
    ip.user_ns["text"] = "abc " * 1000
    run(ip, "%config AskMagics.context_budget = 100")
    run(ip, "%%ask -n 1\nSummarise {text}")
    prompt = llm_magic.last_answer().prompt
    assert "characters cut]" in prompt and len(prompt) < 1500
    run(ip, "%%ask -n 1 --raw\n{text!full}")
    assert llm_magic.last_answer().prompt == "abc " * 1000 + "\n"  # --raw keeps the cell as it is
    _, out = run(ip, "%config AskMagics.context_budget = 0")  # %config reports a refused value in one line
    assert "AskMagics.context_budget must be > 0, got 0" in out
    assert llm_magic.current_settings().context_budget == 100


def test_small_values_are_sent_as_before(ip):
    ip.user_ns.update(n=42, items=[1, 2, 3], name="Ada")
    _, out = run(ip, "%%ask -n 1 --raw\n{n} {items} {name}")
    assert llm_magic.last_answer().prompt == "42 [1, 2, 3] Ada\n"
    assert "summarised" not in out


def test_a_bad_repr_is_one_line_and_the_answer_comes(ip):
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr for you")

    ip.user_ns["b"] = Broken()
    ip.user_ns["s"] = "bad \ud800 surrogate"
    _, out = run(ip, "%%ask -n 2 -o a\nWhat is {b}? {s}")
    assert ip.user_ns["a"].finish_reason in ("stop", "length")
    assert "repr raised RuntimeError: no repr for you" in llm_magic.last_answer().prompt
    assert "\ufffd surrogate" in llm_magic.last_answer().prompt
    assert "Traceback" not in out


def test_cells_adds_the_last_executed_cells(ip):
    run(ip, "values = [3, 1, 2]", store_history=True)
    run(ip, "sorted(values)", store_history=True)
    run_error(ip, "values.sort(key=1)", store_history=True)
    run(ip, "%%ask -n 2 --cells 2\nWhy did the last cell fail?", store_history=True)
    prompt = llm_magic.last_answer().prompt
    assert "In [2]:\nsorted(values)\nOut [2]: [1, 2, 3]" in prompt
    assert "In [3]:\nvalues.sort(key=1)" in prompt and "TypeError" in prompt
    assert "values = [3, 1, 2]" not in prompt  # only the last 2
    assert "Why did the last cell fail?" in prompt and "%%ask" not in prompt
    err, _ = run_error(ip, "%%ask --cells 0\nhi")
    assert "--cells" in str(err)


def test_every_ask_output_carries_its_provenance(ip, monkeypatch):
    outputs = ask_in_notebook(ip, monkeypatch, "%%ask -n 3 --seed 5 --temperature 0.3\nhello")
    final = outputs[-1]
    meta = final.metadata["llm_magic"]
    assert meta["seed"] == 5 and meta["max_tokens"] == 3 and meta["sampling"]["temperature"] == 0.3
    assert meta["finish_reason"] in ("stop", "length") and meta["n_tokens"] >= 1
    assert meta["versions"]["llm_magic"] == llm_magic.__version__ and meta["log_id"]
    with_hash = [o.metadata["llm_magic"] for o in outputs if o.metadata and o.metadata["llm_magic"].get("sha256")]
    for _ in range(100):  # the hash is computed after the answer; the metadata follows
        if with_hash or llm_magic.last_answer().provenance.get("sha256"):
            break
        threading.Event().wait(0.05)
    assert len(llm_magic.last_answer().provenance["sha256"]) == 64


def test_cache_replays_an_identical_ask_and_fresh_asks_again(ip):
    cell = "%%ask -n 5 --seed 11 --temperature 0.9 -o a\nTell me a story"
    run(ip, cell)
    first = ip.user_ns["a"]
    name = first.model
    before = uses(name)
    _, out = run(ip, cell.replace("-o a", "-o b --cache"))
    replayed = ip.user_ns["b"]
    assert replayed.replayed and replayed.text == first.text and uses(name) == before
    assert "replayed from the ask log" in out and f"#{first.log_id}" in out
    run(ip, "%llm last")
    _, out = run(ip, "%llm last")
    assert "replayed" in out
    run(ip, cell.replace("-o a", "-o c --cache --fresh"))
    assert not ip.user_ns["c"].replayed and uses(name) == before + 1
    run(ip, "%config AskMagics.cache = True")
    run(ip, cell.replace("-o a", "-o d"))
    assert ip.user_ns["d"].replayed and uses(name) == before + 1
    run(ip, cell.replace("-o a", "-o e --fresh"))
    assert not ip.user_ns["e"].replayed and uses(name) == before + 2


def test_log_off_means_no_record_and_no_replay(ip, tmp_path):
    run(ip, "%config AskMagics.log = False")
    run(ip, "%%ask -n 2 -o a\nhi")
    assert ip.user_ns["a"].log_id is None
    run(ip, "%%ask -n 2 --cache -o b\nhi")
    assert not ip.user_ns["b"].replayed
    err, _ = run_error(ip, "%llm log")
    assert "off" in str(err)
