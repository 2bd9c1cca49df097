"""llm_magic.summaries (and summaries_data): {name} of a large object, summarised by type within a
token budget; small objects as before; bad reprs time-boxed or reported in one line."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from llm_magic.summaries import clean, cut_to, estimate_tokens, summarize

pd = pytest.importorskip("pandas")


def wide_frame(rows: int = 10_000, cols: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((rows, cols)), columns=[f"measure_{i:02d}" for i in range(cols)])
    df["measure_03"] = df["measure_03"].astype(str)
    df.loc[::7, "measure_05"] = np.nan
    df["measure_07"] = pd.date_range("2020-01-01", periods=rows, freq="h")
    return df


def test_small_objects_are_sent_as_before():
    for value in (42, 3.5, None, True, "short text", [1, 2, 3], {"a": 1}, (1, "x"), {1, 2}):
        s = summarize(value)
        assert s.text == str(value) and not s.cut
    small = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert summarize(small).text == str(small)
    arr = np.arange(6).reshape(2, 3)
    assert summarize(arr).text == str(arr)
    series = pd.Series(range(30), name="n")  # pandas shows all 30: as before
    assert summarize(series).text == str(series)


def test_a_wide_dataframe_lists_every_column_with_dtype_and_nulls_within_the_budget():
    df = wide_frame()
    s = summarize(df, budget=1000)
    assert s.cut and "10,000 × 30 DataFrame" in s.what
    assert estimate_tokens(s.text) <= 1000
    assert "10,000 rows × 30 columns" in s.text
    for name, dtype in df.dtypes.items():
        assert f"{name}: {dtype}" in s.text
    assert "measure_05: float64 (1,429 null)" in s.text
    assert "first " in s.text and "last " in s.text  # head and tail rows
    assert "\n9999 | " in s.text  # the last row, by its index


def test_a_dataframe_with_many_columns_still_names_all_of_them_or_says_how_many_are_left():
    df = pd.DataFrame(np.zeros((3, 400)), columns=[f"c{i}" for i in range(400)])
    s = summarize(df, budget=1000)
    assert estimate_tokens(s.text) <= 1000
    assert "3 rows × 400 columns" in s.text
    assert "c0" in s.text and ("c399" in s.text or "more" in s.text)


def test_series_and_polars_frames():
    s = summarize(pd.Series(np.arange(100_000, dtype=float), name="x"), budget=300)
    assert "100,000 values, dtype float64" in s.text and "min 0, max 99999" in s.text and s.cut
    pl = pytest.importorskip("polars")
    frame = pl.DataFrame({"a": list(range(5000)), "b": [None, "x"] * 2500})
    s = summarize(frame, budget=400)
    assert "polars.DataFrame: 5,000 rows × 2 columns" in s.text
    assert "a: Int64" in s.text and "b: String (2,500 null)" in s.text


def test_a_large_array_is_summarised_from_a_sample_quickly():
    a = np.zeros((4096, 4096), dtype=np.float32)  # 64 MB: big enough to be sampled
    a[::2, ::2] = 1.0
    started = time.perf_counter()
    s = summarize(a, budget=200)
    assert time.perf_counter() - started < 2.0  # generous: the benchmark measures the real target
    assert "shape (4,096 × 4,096), dtype float32" in s.text and "64.0 MB" in s.text
    assert "sample" in s.text and "min 0, max 1" in s.text
    transposed = summarize(a.T[::3], budget=200)  # not contiguous: sampled by index, not copied
    assert "dtype float32" in transposed.text and "min 0, max 1" in transposed.text
    odd = summarize(np.array([np.nan, 1.0, np.inf] * 1000), budget=200)
    assert "min 1, max 1" in odd.text and "NaN/inf" in odd.text


def test_strings_are_cut_with_a_note_saying_how_much():
    text = "".join(f"line {i}\n" for i in range(200_000))
    s = summarize(text, budget=500)
    assert s.cut and estimate_tokens(s.text) <= 500
    assert s.text.startswith("line 0\n") and s.text.rstrip().endswith("line 199999")
    cut = int(s.text.split("[… ")[1].split(" characters cut]")[0].replace(",", ""))
    assert len(s.text) - len(f"[… {cut:,} characters cut]") - 2 + cut == pytest.approx(len(text), abs=2)


def test_containers_show_length_and_first_items_cheaply():
    huge = {i: str(i) for i in range(1_000_000)}
    started = time.perf_counter()
    s = summarize(huge, budget=300)
    assert time.perf_counter() - started < 2.0
    assert s.text.startswith("dict of 1,000,000 keys; the first") and "0: '0'" in s.text
    assert estimate_tokens(s.text) <= 300
    loop: list = [1, 2]
    loop.append(loop)
    assert summarize(loop).text == "[1, 2, [...]]"
    big_loop = [loop] * 5000
    assert "list of 5,000 items" in summarize(big_loop, budget=200).text


def test_exceptions_give_type_message_and_traceback_tail():
    def inner():
        raise ValueError("bad value")

    try:
        inner()
    except ValueError as e:
        s = summarize(e)
    assert s.text.startswith("ValueError: bad value\nTraceback (most recent call last):")
    assert "in inner" in s.text


def test_ai_repr_then_repr_markdown_then_repr():
    class WithAI:
        def _ai_repr_(self, **kwargs):
            return {"text/plain": f"plain {kwargs.get('max_tokens')}", "text/markdown": "**for the model**"}

        def _repr_markdown_(self):
            return "markdown"

    class PlainAI:
        def _ai_repr_(self):
            return {"text/plain": "plain only"}

    class WithMarkdown:
        def _repr_markdown_(self):
            return "| a |\n|---|\n| 1 |"

    assert summarize(WithAI()).text == "**for the model**"
    assert summarize(PlainAI()).text == "plain only"
    assert summarize(WithMarkdown()).text == "| a |\n|---|\n| 1 |"


def test_a_repr_that_raises_or_hangs_gives_one_line():
    class Raises:
        def __repr__(self):
            raise RuntimeError("repr broke")

    class Hangs:
        def __repr__(self):
            threading.Event().wait(30)
            return "never"

    s = summarize(Raises())
    assert s.cut and "repr raised RuntimeError: repr broke" in s.text and "\n" not in s.text
    started = time.monotonic()
    s = summarize([Hangs()], timeout=0.3)
    assert time.monotonic() - started < 5
    assert s.cut and "did not finish in 0.3 s" in s.text


def test_surrogates_are_replaced_and_cutting_keeps_the_budget():
    assert clean("a\ud800b") == "a\ufffdb"
    s = summarize("x\udcff" * 5000, budget=100)
    s.text.encode("utf-8")  # no lone surrogate left: it encodes
    assert cut_to("word " * 10_000, 50, estimate_tokens).count("[…") == 1


def test_summaries_import_no_data_library():
    code = (
        "import sys, llm_magic.summaries as s\n"
        "s.summarize(list(range(10000))); s.summarize('x' * 100000); s.summarize(ValueError('v'))\n"
        "print(sorted(m for m in ('pandas', 'polars', 'numpy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
