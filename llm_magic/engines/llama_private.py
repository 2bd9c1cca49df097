"""Every use of llama-cpp-python below its public API, in one module.

llm_magic needs a few things llama-cpp-python does not offer publicly: a way to abandon a load
(the progress callback), quiet output without swapping the process-wide stdout (the native log
callback, ``print`` shadowed in its modules), the native context and vocabulary behind a
``Llama`` (our generation loop, BOS handling, chat template tokens, grammar validation), the
token count llama-cpp-python's own calls keep (so they and our loop never mistake each other's
KV cache), a grammar object's text, and loading a vision projector at load time. The C functions
the loop calls are public, but their names are checked here too (``LOOP_API``).

Each of those is one small function here; nothing else in llm_magic touches a private name.
``check()`` lists the names that moved or vanished in the installed llama-cpp-python (the test
``tests/test_llama_private.py`` runs it), so an upgrade that breaks one is caught by name.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .llama_memory import use_extra_buffers

native_log = logging.getLogger("llm_magic.llama_cpp")

HINT = "update llm_magic/engines/llama_private.py"

_setup_lock = threading.Lock()
_llama_cpp: Any = None  # the llama_cpp package, once install_hooks() has run
_local = threading.local()  # per thread: .lines (native log capture), .abort (load abort event)
_keep_alive: list[Any] = []  # the ctypes callbacks handed to C, and our wrapped default params


# ---- hooks: native log, load abort, quiet prints ----------------------------------------------------


def _native_log(level: int, text: bytes | None, _user_data: Any) -> None:
    """llama.cpp's log callback: never print; keep lines for diagnosis; debug logging shows them.
    Nothing here may raise (into C)."""
    if text is None:
        return
    line = text.decode("utf-8", errors="replace")
    lines = getattr(_local, "lines", None)
    if lines is not None:
        lines.append(line)
    if native_log.isEnabledFor(logging.DEBUG):
        native_log.debug(line.rstrip("\n"))


def _load_progress(_progress: float, _user_data: Any) -> bool:
    """llama.cpp's load progress callback: returning False aborts the load (there is no other way)."""
    abort = getattr(_local, "abort", None)
    return not (abort is not None and abort.is_set())


def _quiet_print(*args: Any, **_kwargs: Any) -> None:
    """Replaces ``print`` inside llama_cpp's modules: their verbose prints go to our debug log."""
    if native_log.isEnabledFor(logging.DEBUG):
        native_log.debug(" ".join(str(a) for a in args))


def _install_load_abort(low: Any) -> None:
    """Give every model load a progress callback, so a load can be abandoned (unload, shutdown).

    ``Llama.__init__`` builds its model params from ``llama_model_default_params()`` and offers no
    hook for the callback, so we wrap that function; the callback is a no-op outside our loads."""
    if low.llama_model_default_params in _keep_alive:
        return
    original = low.llama_model_default_params
    callback = low.llama_progress_callback(_load_progress)

    def default_params_with_abort() -> Any:
        params = original()
        params.progress_callback = callback
        if getattr(_local, "loading", False) and not use_extra_buffers():  # our loads only
            params.use_extra_bufts = False
        return params

    _keep_alive.extend((callback, default_params_with_abort))
    low.llama_model_default_params = default_params_with_abort


def install_hooks() -> Any:
    """Import ``llama_cpp`` once, route its output to logging and make loads abortable; return it.

    We construct ``Llama(verbose=True)`` on purpose: ``verbose=False`` wraps the load in
    ``suppress_stdout_stderr``, which swaps the *process-wide* ``sys.stdout``/fds 1-2 for
    /dev/null and would swallow the notebook's own output while a model loads in the background.
    Instead we install our own native log callback and shadow ``print`` in llama_cpp's modules.
    """
    global _llama_cpp
    if _llama_cpp is not None:
        return _llama_cpp
    with _setup_lock:
        if _llama_cpp is None:
            import llama_cpp as lc
            import llama_cpp._internals as internals
            import llama_cpp.llama as llama_module
            import llama_cpp.llama_chat_format as chat_format
            import llama_cpp.llama_cpp as low

            callback = low.llama_log_callback(_native_log)
            low.llama_log_set(callback, ctypes.c_void_p(0))
            _keep_alive.append(callback)
            try:  # the multimodal library logs through its own callbacks
                import llama_cpp.mtmd_cpp as mtmd

                mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))
                mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
            except (ImportError, AttributeError, OSError):
                pass
            _install_load_abort(low)
            for module in (llama_module, internals, chat_format):
                module.__dict__["print"] = _quiet_print
            _llama_cpp = lc
    return _llama_cpp


@contextmanager
def capture_native_log(maxlen: int = 200) -> Iterator[deque[str]]:
    """Collect llama.cpp's log lines written on this thread while inside (the newest ``maxlen``)."""
    lines: deque[str] = deque(maxlen=maxlen)
    outer, _local.lines = getattr(_local, "lines", None), lines
    try:
        yield lines
    finally:
        _local.lines = outer


@contextmanager
def abortable_load(abort: threading.Event | None) -> Iterator[None]:
    """A model load on this thread gives up (``Llama`` raises ``ValueError``) once ``abort`` is set."""
    outer, _local.abort = getattr(_local, "abort", None), abort
    loading, _local.loading = getattr(_local, "loading", False), True
    try:
        yield
    finally:
        _local.abort, _local.loading = outer, loading


def native_reason(lines: Iterable[str]) -> str | None:
    """The last error line llama.cpp logged, if any."""
    errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
    return errors[-1] if errors else None


# ---- a loaded Llama's internals -----------------------------------------------------------------------


def n_tokens(llm: Any) -> int:
    """How many tokens llama-cpp-python's own calls (``eval``, the vision chat handler) think the
    KV cache holds. Our loop keeps it at 0 and reads a change as "they used the context"."""
    return int(llm.n_tokens)


def set_n_tokens(llm: Any, n: int) -> None:
    """Tell llama-cpp-python's own calls that the KV cache holds ``n`` tokens (0: start afresh)."""
    llm.n_tokens = n


def add_bos(llm: Any) -> bool:
    """Does the model's tokenizer want a BOS token in front of a prompt?"""
    return bool(llm._model.add_bos_token())


def token_text(llm: Any, token: int) -> str:
    """The text of one vocabulary entry (e.g. ``<s>``)."""
    return str(llm._model.token_get_text(token))


def native_context(llm: Any) -> Any:
    """The ``llama_context *`` of a loaded ``Llama`` (for llama.cpp's own C functions)."""
    return llm._ctx.ctx


def vocab(llm: Any) -> Any:
    """The native ``llama_vocab`` pointer (for ``llama_sampler_init_grammar``)."""
    return llm._model.vocab


def grammar_text(grammar: Any) -> str:
    """The GBNF text a ``llama_cpp.LlamaGrammar`` was built from."""
    return str(grammar._grammar)


def recurrent_or_hybrid(llm: Any) -> bool:
    """Recurrent and hybrid models cannot drop a KV tail, so a prompt must not be pre-evaluated."""
    return bool(getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False))


def init_projector(handler: Any, llm: Any) -> None:
    """Load a vision chat handler's projector now (llama-cpp-python would on the first image);
    raises ``ValueError`` when it does not fit the model."""
    handler._init_mtmd_context(llm)


# ---- what we rely on, checked against the installed llama-cpp-python -----------------------------------

# the C functions our generation loop calls (public binding API, but a rename breaks the loop)
LOOP_API = (
    "llama_decode",
    "llama_batch_get_one",
    "llama_get_memory",
    "llama_memory_clear",
    "llama_memory_seq_rm",
    "llama_state_seq_get_size",
    "llama_state_seq_get_data",
    "llama_state_seq_set_data",
    "llama_get_logits_ith",
    "llama_vocab_n_tokens",
    "llama_vocab_is_eog",
    "llama_token_to_piece",
    "llama_token_data_array",
    "llama_token_data_p",
    "llama_sampler_chain_init",
    "llama_sampler_chain_default_params",
    "llama_sampler_chain_add",
    "llama_sampler_sample",
    "llama_sampler_apply",
    "llama_sampler_accept",
    "llama_sampler_init_greedy",
    "llama_sampler_init_dist",
    "llama_sampler_init_top_k",
    "llama_sampler_init_top_p",
    "llama_sampler_init_min_p",
    "llama_sampler_init_temp",
    "llama_sampler_init_penalties",
)
_PROJECTOR_BASES = ("MTMDChatHandler", "Llava15ChatHandler")  # every vision handler derives from one


def lc_grammar_class() -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar


def _problem(version: str, name: str, detail: str = "") -> str:
    return f"llama-cpp-python {version} moved or removed {name}{f' ({detail})' if detail else ''}; {HINT}"


def _static_problems(version: str) -> list[str]:
    problems: list[str] = []

    def need(owner: Any, owner_name: str, attrs: Sequence[str]) -> None:
        for attr in attrs:
            if not hasattr(owner, attr):
                problems.append(_problem(version, f"{owner_name}.{attr}"))

    try:
        import llama_cpp._internals as internals
        import llama_cpp.llama as llama_module
        import llama_cpp.llama_chat_format as chat_format
        import llama_cpp.llama_cpp as low
    except ImportError as e:
        return [_problem(version, f"the module {e.name or e}")]
    need(
        low,
        "llama_cpp.llama_cpp",
        (
            "llama_model_default_params",
            "llama_progress_callback",
            "llama_log_callback",
            "llama_log_set",
            "llama_sampler_init_grammar",
            "llama_sampler_free",
            *LOOP_API,
        ),
    )
    fields = {f[0] for f in getattr(getattr(low, "llama_model_params", None), "_fields_", [])}
    for field in ("progress_callback", "use_extra_bufts"):
        if field not in fields:
            problems.append(_problem(version, f"llama_cpp.llama_cpp.llama_model_params.{field}"))
    try:
        init_source = inspect.getsource(llama_module.Llama.__init__)
    except (OSError, TypeError):
        init_source = "llama_model_default_params()"  # no source to read: trust the loaded-model check
    if "llama_model_default_params()" not in init_source:
        problems.append(
            _problem(
                version,
                "the call of llama_cpp.llama_cpp.llama_model_default_params() in llama_cpp.llama.Llama.__init__",
                "a load can no longer be abandoned",
            )
        )
    need(internals, "llama_cpp._internals", ("LlamaModel",))
    try:
        grammar_text(lc_grammar_class().from_string('root ::= "a"', verbose=False))
    except (AttributeError, TypeError, ValueError) as e:
        problems.append(_problem(version, "llama_cpp.LlamaGrammar._grammar", f"{type(e).__name__}: {e}"))
    need(getattr(internals, "LlamaModel", None), "llama_cpp._internals.LlamaModel", ("add_bos_token", "token_get_text"))
    need(chat_format, "llama_cpp.llama_chat_format", _PROJECTOR_BASES)
    for base in _PROJECTOR_BASES:
        need(getattr(chat_format, base, None), f"llama_cpp.llama_chat_format.{base}", ("_init_mtmd_context",))
    try:
        import llama_cpp.mtmd_cpp as mtmd
    except ImportError as e:
        problems.append(_problem(version, f"the module {e.name or 'llama_cpp.mtmd_cpp'}"))
    except OSError:
        pass  # built without the multimodal library: nothing to route
    else:
        need(mtmd, "llama_cpp.mtmd_cpp", ("mtmd_log_set", "mtmd_helper_log_set"))
    return problems


def _loaded_problems(version: str, llm: Any) -> list[str]:
    problems: list[str] = []
    checks: list[tuple[str, Callable[[], object]]] = [
        ("llama_cpp.llama.Llama._model", lambda: llm._model),
        ("llama_cpp.llama.Llama._model.vocab", lambda: vocab(llm)),
        ("llama_cpp._internals.LlamaModel.add_bos_token()", lambda: add_bos(llm)),
        ("llama_cpp._internals.LlamaModel.token_get_text()", lambda: token_text(llm, llm.token_eos())),
        ("llama_cpp.llama.Llama.n_tokens", lambda: int(llm.n_tokens)),
        ("llama_cpp.llama.Llama.n_tokens (assignable)", lambda: set_n_tokens(llm, n_tokens(llm))),
        ("llama_cpp.llama.Llama._ctx.ctx", lambda: native_context(llm)),
        ("llama_cpp.llama.Llama._is_recurrent", lambda: llm._is_recurrent),
        ("llama_cpp.llama.Llama._is_hybrid", lambda: llm._is_hybrid),
    ]
    for name, probe in checks:
        try:
            probe()
        except (AttributeError, TypeError, ValueError, ctypes.ArgumentError) as e:  # it no longer works as we use it
            problems.append(_problem(version, name, f"{type(e).__name__}: {e}"))
    return problems


def check(llm: Any = None) -> list[str]:
    """Problems with the private llama-cpp-python names we rely on, in words (empty: all fine).

    Without ``llm`` it checks modules and classes; with a loaded ``llama_cpp.Llama`` also the
    attributes that exist only on an instance."""
    try:
        import llama_cpp
    except ImportError as e:
        return [f"llama-cpp-python cannot be imported: {e}"]
    version = str(getattr(llama_cpp, "__version__", "?"))
    return _static_problems(version) + ([] if llm is None else _loaded_problems(version, llm))
