"""The IPython front end: ``%load_ext llm_magic`` registers ``%%ask``, ``%ask`` and ``%llm``.

Importing this subpackage does not import IPython; loading the extension does.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import settings as settings_mod

log = logging.getLogger("llm_magic")

_TRANSFORMER = "ask_line_transformer"


def _drop_transformer(ipython: Any) -> None:
    cleanups = getattr(ipython, "input_transformers_cleanup", None)
    if cleanups is not None:
        cleanups[:] = [t for t in cleanups if getattr(t, "__name__", "") != _TRANSFORMER]


def _drop_refused_config(ipython: Any) -> None:
    """A value ``%config`` refused (or a bad ``c.AskMagics.x`` in ipython_config.py) stays in the
    shell's config and would make every later ``%load_ext`` fail: drop it, with one warning line."""
    from traitlets import TraitError

    section = ipython.config.get("AskMagics")
    if not section:
        return
    probe = settings_mod.Settings()
    for name in list(section):
        try:
            if name not in probe.trait_names(config=True):
                raise TraitError(f"AskMagics has no option {name!r}")
            setattr(probe, name, section[name])
        except TraitError as e:
            reason = str(e).replace("Settings.", "AskMagics.", 1)
            log.warning("llm_magic: ignoring AskMagics.%s from the configuration: %s", name, reason)
            del section[name]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext llm_magic``: register the magics and start preloading; returns without waiting."""
    from .. import preload
    from ..errors import LLMMagicError
    from ..specs import default_model_name
    from . import completion, inline_comm
    from .magics import AskMagics
    from .parsing import ask_line_transformer

    previous = settings_mod.current()
    _drop_refused_config(ipython)
    magics = AskMagics(shell=ipython)
    configured = set(ipython.config.get("AskMagics", {}))
    for name in previous.trait_names(config=True):  # options set from Python before %load_ext carry over
        if name not in configured and getattr(previous, name) != previous.trait_defaults(name):
            setattr(magics, name, getattr(previous, name))
    magics.session_aliases.update(previous.session_aliases)
    settings_mod.use(magics)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.cell_errors.post_run_cell)  # listen only: {Err[n]}
    _drop_transformer(ipython)
    cleanups = getattr(ipython, "input_transformers_cleanup", None)
    if cleanups is not None:
        cleanups.append(ask_line_transformer)
    completion.register(ipython)  # %%ask -m <Tab>: aliases and the models on this machine
    inline_comm.register(ipython)  # JupyterLab's ghost text: the llm_magic.inline comm (issue 16)
    names: list[str] | None = magics.preload
    if names is None:
        default = default_model_name()
        names = [default] if default else []
        # a completion model of its own is warm too by the first keystroke
        if magics.inline_completion and magics.completion_model and magics.completion_model not in names:
            names.append(magics.completion_model)
    for name in names:
        try:
            preload(name)
        except LLMMagicError as e:
            log.warning("llm_magic: cannot preload %s: %s", name, e)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext llm_magic``: free every model and stop every worker thread."""
    from .. import cleanup_models
    from . import completion, inline_comm

    inline_comm.unregister(ipython)
    cleanup_models()
    _drop_transformer(ipython)
    completion.unregister(ipython)
    magics = ipython.magics_manager.registry.pop("AskMagics", None)
    ipython.configurables[:] = [c for c in ipython.configurables if type(c).__name__ != "AskMagics"]
    if magics is None:
        return
    try:
        ipython.events.unregister("post_run_cell", magics.cell_errors.post_run_cell)
    except ValueError:
        pass
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        for name in ("ask", "llm"):
            if name in table and getattr(table[name], "__self__", None) is magics:
                del table[name]
    if settings_mod.current() is magics:  # the options keep their values for plain-Python use
        plain = settings_mod.Settings(**{n: getattr(magics, n) for n in magics.trait_names(config=True)})
        plain.session_aliases.update(magics.session_aliases)
        settings_mod.use(plain)
