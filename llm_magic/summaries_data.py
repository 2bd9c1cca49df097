"""Summaries of data objects: pandas DataFrame/Series, polars DataFrame/Series, numpy arrays, torch
tensors and other array-likes (anything with a ``shape`` and a ``dtype``).

A library is used only when the object comes from it: ``sys.modules`` tells whether it is imported
at all (if not, no object can come from it), and nothing here imports it. Statistics are computed
once per summary and cheaply: a large array's min/max/mean come from an evenly spaced sample of
``SAMPLE`` elements (a view or one fancy index, never a copy of the array), so a 1 GB array takes
milliseconds. ``levels_for(obj)`` gives ``(make, n_levels, what)``: ``make(level)`` is the text at
that level of detail (0 = most), for ``summaries.fit`` to pick the first that fits the budget.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

SAMPLE = 100_000  # elements sampled for the statistics of a larger array
EXACT = 1_000_000  # arrays up to this size get exact statistics
NULL_CELLS = 20_000_000  # DataFrames up to this many cells get exact null counts

Levels = tuple[Callable[[int], str], int, str]


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _val(v: Any, digits: int = 6, width: int = 40) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _shape(shape: Sequence[int]) -> str:
    return " × ".join(f"{int(n):,}" for n in shape) if shape else "scalar"


def levels_for(obj: Any) -> Levels | None:
    """The summary levels of a data object, or None when ``obj`` is not one."""
    pd = _module("pandas")
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            return _pandas_frame(obj)
        if isinstance(obj, pd.Series):
            return _pandas_series(obj)
    pl = _module("polars")
    if pl is not None:
        if isinstance(obj, pl.DataFrame):
            return _polars_frame(obj)
        if isinstance(obj, pl.Series):
            return _polars_series(obj)
    np = _module("numpy")
    if np is not None and isinstance(obj, np.ndarray) and obj.ndim > 0:
        return _numpy(np, obj)
    torch = _module("torch")
    if torch is not None and isinstance(obj, torch.Tensor) and obj.dim() > 0:
        return _torch(obj)
    if _array_like(obj):
        return _array(obj)
    return None


def small_text(obj: Any) -> str | None:
    """``str(obj)`` when the library shows all of it (no rows, columns or values elided: pandas'
    default 60 rows and 20 columns, polars' 8 and 8, numpy's 1000 elements); the caller still checks the budget."""
    shape = getattr(obj, "shape", None)
    if not isinstance(shape, tuple):
        return None
    cells = 1
    for n in shape:
        cells *= int(n)
    name = type(obj).__name__
    polars = type(obj).__module__.startswith("polars")  # polars shows 8 rows, 8 columns, 10 values
    if name == "DataFrame" and len(shape) == 2:
        rows, cols = (8, 8) if polars else (60, 20)
        return str(obj) if shape[0] <= rows and shape[1] <= cols else None
    if name == "Series":
        return str(obj) if cells <= (10 if polars else 60) else None
    return str(obj) if cells <= 1000 else None


def _array_like(obj: Any) -> bool:
    try:
        shape = getattr(type(obj), "shape", None) and obj.shape
        return isinstance(shape, tuple) and all(isinstance(n, int) for n in shape) and hasattr(obj, "dtype")
    except Exception:  # noqa: BLE001 - a property that raises: not an array we can read
        return False


# ---- pandas ---------------------------------------------------------------------------------------


def _pandas_nulls(df: Any) -> tuple[list[int], str]:
    if df.size <= NULL_CELLS:
        return [int(n) for n in df.isna().sum().tolist()], ""
    sample = df.iloc[:: max(1, len(df) // SAMPLE)]
    return [int(n) for n in sample.isna().sum().tolist()], f" (nulls counted in a sample of {len(sample):,} rows)"


ROWS = ((5, 5), (3, 2), (2, 1), (1, 1), (0, 0), (0, 0), (0, 0))


def _frame_text(
    title: str,
    columns: list[tuple[str, str, int]],
    note: str,
    rows: Callable[[int, int], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]],
    n_rows: int,
    level: int,
) -> str:
    """One frame summary: the title, every column (name: dtype, nulls), then head and tail rows."""
    head_n, tail_n = ROWS[level]
    head_n, tail_n = min(head_n, n_rows), min(tail_n, max(0, n_rows - head_n))
    digits = 6 if level == 0 else 4
    lines = [title]
    if level <= 4:
        cols = [f"{name}: {dtype}" + (f" ({nulls:,} null)" if nulls else "") for name, dtype, nulls in columns]
        lines.append(f"columns (name: dtype, nulls){note}: " + "; ".join(cols))
    else:  # the dtypes once each, the columns that have nulls apart
        by_dtype: dict[str, list[str]] = {}
        for name, dtype, _ in columns:
            by_dtype.setdefault(dtype, []).append(name)
        limit = None if level == 5 else 40
        groups = []
        for dtype, names in by_dtype.items():
            shown = names if limit is None else names[:limit]
            more = f", … {len(names) - len(shown):,} more" if len(shown) < len(names) else ""
            groups.append(f"{dtype}: {', '.join(shown)}{more}")
        lines.append("columns by dtype: " + "; ".join(groups))
        with_nulls = [f"{name} ({nulls:,})" for name, _, nulls in columns if nulls]
        if with_nulls:
            lines.append("nulls in: " + ", ".join(with_nulls[: limit or len(with_nulls)]) + note)
    head, tail = rows(head_n, tail_n)
    if head:
        lines.append(f"first {len(head)} rows (index | values in column order):")
        lines += [" | ".join(_val(v, digits) for v in row) for row in head]
    if tail:
        lines.append(f"last {len(tail)} rows:")
        lines += [" | ".join(_val(v, digits) for v in row) for row in tail]
    return "\n".join(lines)


def _pandas_frame(df: Any) -> Levels:
    nulls, note = _pandas_nulls(df)
    columns = [(str(c), str(t), n) for c, t, n in zip(df.columns, df.dtypes, nulls, strict=False)]
    n_rows, n_cols = df.shape
    title = f"pandas.DataFrame: {n_rows:,} rows × {n_cols:,} columns"
    if type(df.index).__name__ != "RangeIndex":
        title += f", index {type(df.index).__name__} ({df.index.dtype})"

    def rows(h: int, t: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        head = list(df.iloc[:h].itertuples(index=True, name=None)) if h else []
        tail = list(df.iloc[n_rows - t :].itertuples(index=True, name=None)) if t else []
        return head, tail

    return (
        lambda level: _frame_text(title, columns, note, rows, n_rows, level),
        len(ROWS),
        f"{n_rows:,} × {n_cols:,} DataFrame",
    )


def _series_text(title: str, stats: str, head: list[str], tail: list[str], level: int) -> str:
    n = (10, 5, 3, 0)[level]
    lines = [title] + ([stats] if stats else [])
    if n and head:
        lines.append("first values: " + ", ".join(head[:n]))
        if tail:
            lines.append("last values: " + ", ".join(tail[-n:]))
    return "\n".join(lines)


def _pandas_series(s: Any) -> Levels:
    n = len(s)
    nulls = int(s.isna().sum()) if n <= NULL_CELLS else None
    title = f"pandas.Series {s.name!r}: {n:,} values, dtype {s.dtype}" + (f", {nulls:,} null" if nulls else "")
    stats = ""
    if s.dtype.kind in "iufb" and n:
        try:
            sample = s if n <= EXACT else s.iloc[:: max(1, n // SAMPLE)]
            of = "" if n <= EXACT else f" (of a {len(sample):,}-value sample)"
            stats = f"min {_val(sample.min())}, max {_val(sample.max())}, mean {_val(float(sample.mean()))}{of}"
        except Exception:  # noqa: BLE001 - statistics are a bonus: an odd dtype goes without
            stats = ""
    head = list(s.iloc[:10].items())
    tail = list(s.iloc[max(10, n - 10) :].items())
    fmt = [f"{i}: {_val(v)}" for i, v in head], [f"{i}: {_val(v)}" for i, v in tail]
    return lambda level: _series_text(title, stats, *fmt, level=level), 4, f"{n:,}-value Series"


# ---- polars ---------------------------------------------------------------------------------------


def _polars_frame(df: Any) -> Levels:
    n_rows, n_cols = df.shape
    nulls = [int(n) for n in df.null_count().row(0)] if n_cols else []
    columns = [(str(c), str(t), n) for (c, t), n in zip(df.schema.items(), nulls, strict=False)]
    title = f"polars.DataFrame: {n_rows:,} rows × {n_cols:,} columns"

    def rows(h: int, t: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        head = [(i, *r) for i, r in enumerate(df.head(h).rows())] if h else []
        tail = [(n_rows - t + i, *r) for i, r in enumerate(df.tail(t).rows())] if t else []
        return head, tail

    return (
        lambda level: _frame_text(title, columns, "", rows, n_rows, level),
        len(ROWS),
        f"{n_rows:,} × {n_cols:,} DataFrame",
    )


def _polars_series(s: Any) -> Levels:
    n = len(s)
    nulls = int(s.null_count())
    title = f"polars.Series {s.name!r}: {n:,} values, dtype {s.dtype}" + (f", {nulls:,} null" if nulls else "")
    stats = ""
    if s.dtype.is_numeric() and n:
        stats = f"min {_val(s.min())}, max {_val(s.max())}, mean {_val(s.mean())}"
    head = [_val(v) for v in s.head(10).to_list()]
    tail = [_val(v) for v in s.tail(10).to_list()] if n > 10 else []
    return lambda level: _series_text(title, stats, head, tail, level), 4, f"{n:,}-value Series"


# ---- numpy, torch and other array-likes ----------------------------------------------------------


def _numpy_stats(np: Any, a: Any) -> str:
    """min/max/mean: exact for small arrays, of an evenly spaced sample for large ones."""
    n = a.size
    if n == 0 or a.dtype.kind not in "biufcmM":
        return ""
    if n <= EXACT:
        sample, of = a, ""
    else:
        flat_idx = np.linspace(0, n - 1, SAMPLE).astype(np.intp)
        sample = a.reshape(-1)[flat_idx] if a.flags.c_contiguous else a[np.unravel_index(flat_idx, a.shape)]
        of = f" (of a {SAMPLE:,}-element sample)"
    try:
        if a.dtype.kind in "mM":
            return f"min {sample.min()}, max {sample.max()}{of}"
        if a.dtype.kind == "c":
            return f"mean {sample.mean():.6g}{of}"
        if a.dtype.kind == "b":
            return f"{int(sample.sum()):,} True of {sample.size:,}{of}"
        with np.errstate(all="ignore"):
            finite = sample[np.isfinite(sample)] if a.dtype.kind == "f" else sample
            nans = int(sample.size - finite.size)
            if finite.size == 0:
                return f"no finite values{of}"
            text = f"min {_val(finite.min().item())}, max {_val(finite.max().item())}, mean {finite.mean():.6g}"
        return text + (f", {nans:,} NaN/inf" if nans else "") + of
    except (TypeError, ValueError):
        return ""


def _array_text(title: str, stats: str, first: list[str], level: int) -> str:
    n = (16, 8, 4, 0)[level]
    lines = [title] + ([stats] if stats else [])
    if n and first:
        lines.append("first values (flattened): " + ", ".join(first[:n]))
    return "\n".join(lines)


def _numpy(np: Any, a: Any) -> Levels:
    kind = f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"
    title = f"{kind}: shape ({_shape(a.shape)}), dtype {a.dtype}, {_size(a.nbytes)}"
    stats = _numpy_stats(np, a)
    first = [_val(v.item() if hasattr(v, "item") else v) for v in a.flat[:16]]
    return lambda level: _array_text(title, stats, first, level), 4, f"{_shape(a.shape)} array"


def _torch(t: Any) -> Levels:
    title = f"torch.Tensor: shape ({_shape(tuple(t.shape))}), dtype {t.dtype}, device {t.device}"
    stats = ""
    try:
        flat = t.detach().reshape(-1)
        n = flat.numel()
        sample = flat if n <= EXACT else flat[:: max(1, n // SAMPLE)]
        of = "" if n <= EXACT else f" (of a {sample.numel():,}-element sample)"
        f = sample.float()
        stats = f"min {_val(f.min().item())}, max {_val(f.max().item())}, mean {_val(f.mean().item())}{of}"
        first = [_val(v) for v in flat[:16].tolist()]
    except Exception:  # noqa: BLE001 - complex, quantized or meta tensors: shape and dtype only
        first = []
    return lambda level: _array_text(title, stats, first, level), 4, f"{_shape(tuple(t.shape))} tensor"


def _array(obj: Any) -> Levels:
    kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    title = f"{kind}: shape ({_shape(obj.shape)}), dtype {obj.dtype}"
    return lambda level: title, 1, f"{_shape(obj.shape)} {type(obj).__name__}"
