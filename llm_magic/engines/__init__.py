"""Engines: in-process llama.cpp (``llama``) and OpenAI-compatible servers (``openai``), both
implementing ``base.Engine``. ``load_engine`` picks one for a spec; each is imported only when used."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..specs import ModelSpec
    from .base import Engine


def load_engine(spec: ModelSpec, abort: threading.Event | None = None) -> Engine:
    """Build the engine for ``spec`` (on a cache worker thread); ``abort`` set = give up."""
    if spec.remote:
        from .openai import RemoteModel

        return RemoteModel.load(spec, abort=abort)
    from .llama import LocalModel

    return LocalModel.load(spec, abort=abort)
