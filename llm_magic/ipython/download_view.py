"""The progress bar of a model download in the cell: an ``hf:`` model that is not in the Hugging
Face cache yet downloads on the cache's loader thread (like a preload); while a cell waits for it,
this shows a ``tqdm.notebook`` bar in Jupyter (text in a terminal), drawn from the main thread.
An interrupt (■, Ctrl-C) stops the download; the next try resumes it."""

from __future__ import annotations

import sys
import time
from typing import Any

from IPython.core.error import UsageError

from .. import model_sources, runtime
from ..cache_entry import LOADING
from ..specs import ModelSpec

POLL_S = 0.1


def _pending(spec: ModelSpec) -> list[str]:
    if spec.remote:
        return []
    return [p for p in (spec.path, spec.mmproj) if p and model_sources.needs_download(p)]


def _make_bar(name: str, total: int, shell: Any) -> Any:
    """tqdm.notebook in a Jupyter kernel (with ipywidgets), tqdm's text bar elsewhere."""
    kwargs: dict[str, Any] = {"total": total or None, "unit": "B", "unit_scale": True, "unit_divisor": 1024}
    if shell is not None and "ZMQ" in type(shell).__name__:
        try:
            from tqdm.notebook import tqdm as notebook_tqdm  # type: ignore[import-untyped]

            return notebook_tqdm(desc=f"downloading {name}", **kwargs)
        except Exception:  # noqa: BLE001 - no widgets front end: the text bar below
            pass
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(desc=f"downloading {name}", file=sys.stderr, mininterval=0.5, **kwargs)


def wait_for_download(spec: ModelSpec, shell: Any = None) -> None:
    """If ``spec``'s file is still to be downloaded, start it (a background load) and show its
    progress until the file is there (or the download fails: the ask then reports why)."""
    paths = _pending(spec)
    if not paths:
        return
    cache = runtime.get().cache
    entry = cache.load(spec)
    bar: Any = None
    shown = 0
    try:
        while entry.state == LOADING and _pending(spec):
            progress = next((p for p in map(model_sources.progress, paths) if p is not None), None)
            if progress is not None and progress.state == "downloading":
                if bar is None:
                    bar = _make_bar(spec.display_name, progress.total, shell)
                if progress.done != shown:
                    bar.update(progress.done - shown)
                    shown = progress.done
            time.sleep(POLL_S)
        if bar is not None:
            progress = next((p for p in map(model_sources.progress, paths) if p is not None), None)
            if progress is not None and progress.done > shown:
                bar.update(progress.done - shown)
    except KeyboardInterrupt:
        cache.unload(entry)  # sets the load's abort: the download stops at its next chunk
        progress = next((p for p in map(model_sources.progress, paths) if p is not None), None)
        got = f" at {progress.text()}" if progress is not None else ""
        raise UsageError(
            f"stopped the download of {spec.display_name}{got}; the next ask (or %llm load) resumes it"
        ) from None
    finally:
        if bar is not None:
            bar.close()


def download_first(model: str | None, shell: Any = None) -> None:
    """Before an ask: download its model if it is an ``hf:`` model not in the cache yet, with the
    progress bar, so the ask's timeout counts from when the file is there. A name that does not
    resolve is left to the ask, which says why."""
    from ..errors import LLMMagicError
    from ..specs import resolve

    try:
        spec = resolve(model or None)
    except LLMMagicError:
        return
    wait_for_download(spec, shell)
