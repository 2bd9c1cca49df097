"""In-process engine: llama-cpp-python.

One ``LocalModel`` wraps one ``llama_cpp.Llama``. It knows how to build a prompt for that model
(chat template when the GGUF has one, a question/answer completion prompt when it doesn't, or the
raw text) and how to stream a completion that stops within one token when asked to.
A ``Llama`` is not thread-safe: callers hold ``LocalModel.lock`` around ``stream``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .. import default_model
from ..config import ModelSpec
from ..conversation import QA_STOP, chat_messages, qa_text, raw_text
from ..errors import ModelLoadError, ModelNotFound, PromptTooLong
from ..gguf_header import GGUFError, diagnose, read_header

log = logging.getLogger("llm_magic")
native_log = logging.getLogger("llm_magic.llama_cpp")


_llama_cpp = None
_setup_lock = threading.Lock()
_local = threading.local()  # per-thread capture of native log lines during a load
def _native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log callback: never print; keep lines for diagnosis; debug logging shows them."""
    try:
        line = text.decode("utf-8", errors="replace")
    except Exception:  # pragma: no cover - never raise into C
        return
    lines = getattr(_local, "lines", None)
    if lines is not None:
        lines.append(line)
    if native_log.isEnabledFor(logging.DEBUG):
        native_log.debug(line.rstrip("\n"))


def _load_progress(_progress: float, _user_data) -> bool:
    """llama.cpp's load progress callback: returning False aborts the load (there is no other way)."""
    abort = getattr(_local, "abort", None)
    return not (abort is not None and abort.is_set())


def _install_load_abort() -> None:
    """Give every model load a progress callback, so a load can be abandoned (unload, shutdown).

    ``Llama.__init__`` builds its model params from ``llama_model_default_params()`` and offers no
    hook for the callback, so we wrap that function; the callback is a no-op outside our loads."""
    import llama_cpp.llama_cpp as low

    if getattr(low.llama_model_default_params, "_llm_magic", False):
        return
    original = low.llama_model_default_params
    callback = low.llama_progress_callback(_load_progress)

    def default_params_with_abort():
        params = original()
        params.progress_callback = callback
        return params

    default_params_with_abort._llm_magic = True
    default_params_with_abort._callback = callback  # keep it alive
    low.llama_model_default_params = default_params_with_abort


def _quiet_print(*args: Any, **kwargs: Any) -> None:
    """Replaces ``print`` inside llama_cpp's modules: their verbose prints go to our debug log."""
    if native_log.isEnabledFor(logging.DEBUG):
        native_log.debug(" ".join(str(a) for a in args))


def llama_cpp():
    """Import llama_cpp once and route its output to logging.

    We construct ``Llama(verbose=True)`` on purpose: ``verbose=False`` wraps the load in
    ``suppress_stdout_stderr``, which swaps the *process-wide* ``sys.stdout``/fds 1-2 for
    /dev/null and would swallow the notebook's own output while a model loads in the background.
    Instead we install our own native log callback and shadow ``print`` in llama_cpp's modules.
    """
    global _llama_cpp
    with _setup_lock:
        if _llama_cpp is None:
            import llama_cpp as lc
            import llama_cpp._internals as internals
            import llama_cpp.llama as llama_module
            import llama_cpp.llama_chat_format as chat_format

            callback = lc.llama_log_callback(_native_log)
            lc.llama_log_set(callback, ctypes.c_void_p(0))
            lc._llm_magic_log_callback = callback  # keep the ctypes callback alive
            try:  # the multimodal library logs through its own callbacks
                import llama_cpp.mtmd_cpp as mtmd

                mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))
                mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
            except (ImportError, AttributeError, OSError):
                pass
            _install_load_abort()
            for module in (llama_module, internals, chat_format):
                module.print = _quiet_print
            _llama_cpp = lc
    return _llama_cpp


def _mlock_allowed(size: int) -> tuple[bool, str]:
    """Can we mlock ``size`` bytes? Raise RLIMIT_MEMLOCK's soft limit if the hard one allows."""
    try:
        import resource
    except ImportError:  # Windows: llama.cpp uses VirtualLock, let it try
        return True, ""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= size:
        return True, ""
    if hard == resource.RLIM_INFINITY or hard >= size:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
            return True, ""
        except (ValueError, OSError):
            pass
    if _has_cap_ipc_lock():  # CAP_IPC_LOCK ignores the limit
        return True, ""
    return False, f"RLIMIT_MEMLOCK is {soft} bytes, the model needs {size}"


def _has_cap_ipc_lock() -> bool:
    """Does this process hold CAP_IPC_LOCK (bit 14 of CapEff)? If we can't tell, let llama.cpp try:
    a refused mlock shows up in its log and is reported all the same."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 14 & 1)
    except OSError:
        pass
    return os.geteuid() == 0


@dataclass
class Prepared:
    tokens: list[int]
    stop: list[str]
    mode: str  # "chat", "completion" or "raw"
    text: str = ""  # the prompt text the tokens stand for
    turns_used: int = 0  # earlier conversation turns kept in the prompt
    system: str | None = None
    messages: list | None = None  # vision: chat messages with image parts


@dataclass
class StreamStats:
    """Filled in by ``LocalModel.stream`` as it goes."""

    n_prompt_tokens: int = 0
    n_prompt_evaluated: int = 0  # prompt tokens not reused from the KV cache
    n_tokens: int = 0
    finish_reason: str | None = None
    first_sample_at: float | None = None  # monotonic time the first token was sampled
    context_tokens: list[int] | None = None  # prompt + generated tokens in the KV cache afterwards
    context_text: str | None = None
    cancel: Any = None  # set by an engine that can abort at once from another thread (closes a stream)


@dataclass
class LocalModel:
    spec: ModelSpec
    llm: Any
    n_ctx: int
    mlock: str  # "on", "off" or "off (fallback: reason)"
    chat_template: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    holder: Any = None  # weakref to the request holding ``lock``
    vision: str | None = None  # the chat handler's name for a vision model

    kind = "local"

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, spec: ModelSpec, abort: threading.Event | None = None) -> "LocalModel":
        lc = llama_cpp()
        path = spec.path
        if not os.path.exists(path) and path == str(default_model.path()) and default_model.is_installed():
            default_model.ensure()
        if not os.path.exists(path):
            raise ModelNotFound(f"model file not found: {path}")
        size = os.path.getsize(path)
        try:

            def enough(md: dict) -> bool:
                arch = md.get("general.architecture")
                return arch is not None and f"{arch}.context_length" in md

            header = read_header(path, until=enough)
        except GGUFError as e:
            raise ModelLoadError(f"cannot load {path}: {e}") from None
        except OSError as e:
            raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None
        n_ctx = spec.n_ctx
        if header.context_length and n_ctx > header.context_length:
            n_ctx = header.context_length
        use_mlock, why_not = (False, "") if not spec.use_mlock else _mlock_allowed(size)
        mlock = "on" if use_mlock else ("off" if not spec.use_mlock else f"off (fallback: {why_not})")
        handler, handler_name = (None, None)
        if spec.mmproj:
            handler, handler_name = _vision_handler(spec, has_template=_has_chat_template(path))
        _local.lines = deque(maxlen=200)
        _local.abort = abort
        try:
            llm = lc.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_batch=min(spec.n_batch, n_ctx),
                n_threads=spec.n_threads,
                n_threads_batch=spec.n_threads_batch,
                use_mmap=spec.use_mmap,
                use_mlock=use_mlock,
                chat_handler=handler,
                verbose=True,  # see llama_cpp(): output is routed, not printed
            )
            if handler is not None:
                _local.lines.clear()
                try:  # load the projector now (llama-cpp-python would on the first image) so a
                    handler._init_mtmd_context(llm)  # mismatch is reported at load time
                except ValueError:
                    reason = _native_reason(_local.lines) or "llama.cpp could not load it"
                    llm.close()
                    raise ModelLoadError(f"the projector {spec.mmproj} does not fit {path}: {reason}") from None
        except ValueError as e:
            if abort is not None and abort.is_set():
                raise ModelLoadError(f"loading {path} was abandoned (unloaded or shutting down)") from None
            reason = diagnose(path) or _native_reason(_local.lines) or str(e)
            raise ModelLoadError(f"cannot load {path}: {reason}") from None
        finally:
            lines = list(_local.lines)
            _local.lines = None
            _local.abort = None
        llm.verbose = False  # no timing prints per generation
        if use_mlock and any("failed to mlock" in line for line in lines):
            mlock = "off (fallback: the OS refused mlock)"
        template = llm.metadata.get("tokenizer.chat_template")
        if handler is not None:
            model = cls(spec=spec, llm=llm, n_ctx=min(n_ctx, llm.n_ctx()), mlock=mlock, chat_template=template)
            model.vision = handler_name
            return model
        # llama.cpp may pad the KV cache beyond n_ctx, but llama-cpp-python sizes its token
        # buffer to the n_ctx we asked for: the smaller one is the real limit.
        return cls(spec=spec, llm=llm, n_ctx=min(n_ctx, llm.n_ctx()), mlock=mlock, chat_template=template)

    # ---- prompting -----------------------------------------------------------------------

    def prepare(self, prompt: str, *, raw: bool = False, system: str | None = None,
                conversation: Any = None, max_tokens: int = 0, images: list | None = None) -> Prepared:
        """Tokenize the request the way this model expects it.

        With a ``conversation``, earlier turns come first; the prompt continues the exact tokens
        of the previous context when its text does (so llama.cpp reuses the KV cache), and the
        oldest turns are dropped until prompt + ``max_tokens`` fits the context window.
        """
        if self.closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")
        llm = self.llm
        if conversation is not None and system is None:
            system = conversation.system
        if images:
            return self._prepare_vision(prompt, images, system, conversation)
        if raw:
            mode = "raw"
        elif self.chat_template and self.spec.chat != "completion":
            mode = "chat"
        else:
            mode = "completion"
        turns = list(conversation.turns) if conversation is not None else []
        special = mode != "raw"
        while True:
            text, stop, add_bos = self._render(mode, turns, prompt, system)
            tokens = None
            if (conversation is not None and conversation.ctx_tokens and len(turns) == len(conversation.turns)
                    and text.startswith(conversation.ctx_text)):
                rest = text[len(conversation.ctx_text):]
                tokens = list(conversation.ctx_tokens) + (
                    llm.tokenize(rest.encode("utf-8"), add_bos=False, special=special) if rest else [])
            if tokens is None:
                add_bos = add_bos and llm._model.add_bos_token()
                tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
            if turns and len(tokens) + max(max_tokens, 1) >= self.n_ctx:
                turns = turns[1:]  # trim the oldest turn and build again
                continue
            break
        if len(tokens) + 1 >= self.n_ctx:
            raise PromptTooLong(
                f"the prompt is {len(tokens)} tokens but the context window of "
                f"{self.spec.display_name} is {self.n_ctx} (n_ctx); shorten it or load the model with a larger n_ctx"
            )
        return Prepared(tokens=tokens, stop=stop, mode=mode, text=text, turns_used=len(turns), system=system)

    def _prepare_vision(self, prompt: str, images: list, system: str | None, conversation: Any) -> Prepared:
        """Chat messages with image parts, for the vision chat handler (which evaluates the images)."""
        if self.vision is None:
            from ..errors import ConfigError

            raise ConfigError(f"{self.spec.display_name} is a text-only model: it cannot take images")
        turns = list(conversation.turns) if conversation is not None else []
        parts = [{"type": "text", "text": prompt}]
        parts += [{"type": "image_url", "image_url": {"url": image.data_uri()}} for image in images]
        messages = chat_messages(turns, prompt, system, content=parts)
        return Prepared(tokens=[], stop=[], mode="vision", text=prompt, turns_used=len(turns), system=system,
                        messages=messages)

    def _render(self, mode: str, turns: list, prompt: str, system: str | None) -> tuple[str, list[str], bool]:
        if mode == "raw":
            return raw_text(turns, prompt), [], True
        if mode == "chat":
            return self._render_chat(turns, prompt, system)
        return qa_text(turns, prompt, system), list(QA_STOP), True

    def _render_chat(self, turns: list, prompt: str, system: str | None) -> tuple[str, list[str], bool]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
        messages = chat_messages(turns, prompt, system)
        formatter = Jinja2ChatFormatter(template=self.chat_template, eos_token=eos, bos_token=bos)
        result = formatter(messages=messages)
        stop = result.stop if isinstance(result.stop, list) else ([result.stop] if result.stop else [])
        # The template may already write the BOS token as text; then don't add another.
        add_bos = not (bos and result.prompt.startswith(bos))
        return result.prompt, [s for s in stop if s], add_bos

    # ---- generation ----------------------------------------------------------------------

    def stream(self, prepared: Prepared, *, max_tokens: int, should_stop: Callable[[], bool],
               stats: StreamStats, deadline: float | None = None, **sampling: Any) -> Iterator[str]:
        """Yield text pieces as tokens are generated. Caller holds ``self.lock``.

        ``should_stop`` is polled once per sampled token (llama-cpp-python's ``stopping_criteria``)
        and between prompt batches, so a stop request ends the work within one token or one batch.
        Stop strings are matched here rather than in llama-cpp-python, so that the token count
        stays exact (its ``finish_reason="stop"`` then always means an end-of-generation token).
        """
        if self.closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")
        if prepared.mode == "vision":
            yield from self._stream_vision(prepared, max_tokens=max_tokens, should_stop=should_stop, stats=stats,
                                           **sampling)
            return
        llm = self.llm
        tokens = prepared.tokens
        stats.n_prompt_tokens = len(tokens)
        reuse = self._reusable_prefix(tokens)
        stats.n_prompt_evaluated = len(tokens) - reuse
        extra_stop = sampling.pop("stop", None) or []
        stops = [s for s in list(prepared.stop) + ([extra_stop] if isinstance(extra_stop, str) else list(extra_stop)) if s]
        seed = sampling.pop("seed", None)
        grammar = sampling.pop("grammar", None)
        kwargs = {k: v for k, v in sampling.items() if v is not None}
        if grammar is not None:
            kwargs["grammar"] = self._grammar(grammar)

        if not self._evaluate_prompt(tokens, reuse, should_stop):
            return  # stopped during a long prompt

        seen = {"len": -1, "accepted": 0}

        def criteria(input_ids, _logits) -> bool:
            if stats.first_sample_at is None:
                stats.first_sample_at = time.monotonic()
            stop = should_stop()
            if len(input_ids) > seen["len"]:  # one call per sampled token (plus a final re-check)
                seen["len"] = len(input_ids)
                if not stop:
                    seen["accepted"] += 1
            return stop

        engine_finish = None
        text, emitted, hit = "", 0, False
        completion = llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            stream=True,
            seed=seed if seed is not None and seed >= 0 else None,
            stopping_criteria=llama_cpp().StoppingCriteriaList([criteria]),
            **kwargs,
        )
        try:
            for chunk in completion:
                choice = chunk["choices"][0]
                if choice.get("finish_reason"):
                    engine_finish = choice["finish_reason"]
                piece = choice["text"]
                if not piece:
                    continue
                if not stops:
                    yield piece
                    continue
                text += piece
                cut = _find_stop(text, stops, emitted)
                if cut is not None:
                    if cut > emitted:
                        yield text[emitted:cut]
                    hit = True
                    break
                safe = len(text) - _held_back(text, stops, emitted)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
            if not hit and stops and emitted < len(text):
                yield text[emitted:]
        finally:
            completion.close()
        self._record_context(tokens, prepared.text, stats)
        accepted = seen["accepted"]
        if engine_finish == "stop" and not hit:
            accepted -= 1  # the end-of-generation token is sampled but is not part of the answer
        stats.n_tokens = max(0, accepted)
        stats.finish_reason = "stop" if hit else engine_finish

    def _stream_vision(self, prepared: Prepared, *, max_tokens: int, should_stop: Callable[[], bool],
                       stats: StreamStats, **sampling: Any) -> Iterator[str]:
        """Through the vision chat handler: it encodes the images and evaluates the prompt, then
        streams. It takes no stopping criteria, so a stop closes the stream after the current token."""
        llm = self.llm
        seed = sampling.pop("seed", None)
        grammar = sampling.pop("grammar", None)
        kwargs = {k: v for k, v in sampling.items() if v is not None}
        if grammar is not None:
            kwargs["grammar"] = self._grammar(grammar)
        if seed is not None and seed >= 0:
            kwargs["seed"] = seed
        chunks = llm.create_chat_completion(messages=prepared.messages, max_tokens=max_tokens, stream=True, **kwargs)
        finish = None
        try:
            for chunk in chunks:
                if stats.first_sample_at is None:
                    stats.first_sample_at = time.monotonic()
                    stats.n_prompt_tokens = stats.n_prompt_evaluated = llm.n_tokens  # images included
                choice = chunk["choices"][0]
                finish = choice.get("finish_reason") or finish
                piece = choice.get("delta", {}).get("content")
                if piece:
                    yield piece
                if should_stop():
                    break
        finally:
            chunks.close()
        generated = max(0, llm.n_tokens - stats.n_prompt_tokens)
        stats.n_tokens = generated + (1 if finish == "length" else 0)
        stats.finish_reason = finish

    def _grammar(self, grammar: Any) -> Any:
        """A ``LlamaGrammar`` for GBNF text, checked first: llama-cpp-python hands llama.cpp's NULL
        for a grammar that does not parse straight to the sampler chain, which then segfaults."""
        if not isinstance(grammar, str):
            return grammar
        lc = llama_cpp()
        _local.lines = deque(maxlen=50)
        try:
            sampler = lc.llama_sampler_init_grammar(self.llm._model.vocab, grammar.encode("utf-8"), b"root")
            lines = list(_local.lines)
        finally:
            _local.lines = None
        if not sampler:
            from ..errors import ConfigError

            reason = next((ln.strip() for ln in reversed(lines) if ln.strip()), "it does not parse")
            raise ConfigError(f"invalid GBNF grammar: {reason}")
        lc.llama_sampler_free(sampler)
        return lc.LlamaGrammar.from_string(grammar, verbose=False)

    def _record_context(self, tokens: list[int], text: str, stats: StreamStats) -> None:
        """What the KV cache holds now (prompt + evaluated generated tokens), for a conversation."""
        llm = self.llm
        n = llm.n_tokens
        if n < len(tokens) or list(llm._input_ids[:len(tokens)]) != list(tokens):
            return
        generated = [int(t) for t in llm._input_ids[len(tokens):n]]
        stats.context_tokens = list(tokens) + generated
        stats.context_text = text + llm.detokenize(generated, prev_tokens=tokens).decode("utf-8", errors="ignore")

    def _evaluate_prompt(self, tokens: list[int], reuse: int, should_stop: Callable[[], bool]) -> bool:
        """Evaluate a long prompt batch by batch so a deadline or Stop can act between batches.

        llama-cpp-python evaluates the whole prompt in one uninterruptible call. We evaluate all
        but its last token ourselves; ``create_completion`` then reuses that prefix from the KV cache.
        Short prompts (one batch) are left to ``create_completion``. Returns False if stopped.
        """
        llm = self.llm
        n_batch = llm.n_batch
        target = len(tokens) - 1
        if target - reuse <= n_batch or getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            return True
        llm.n_tokens = min(llm.n_tokens, reuse)
        for start in range(llm.n_tokens, target, n_batch):
            if should_stop():
                return False
            llm.eval(tokens[start:min(start + n_batch, target)])
        return not should_stop()

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens llama.cpp will reuse from the KV cache."""
        llm = self.llm
        n = 0
        for a, b in zip(llm._input_ids, tokens):
            if a != b:
                break
            n += 1
        return n - 1 if n == len(tokens) and n > 0 else n

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.llm.close()
            _release_freed_memory()


_HANDLERS = {
    "mtmd": "MTMDChatHandler", "gemma3": "MTMDChatHandler", "gemma4": "Gemma4ChatHandler",
    "llava15": "Llava15ChatHandler", "llava16": "Llava16ChatHandler", "qwen25vl": "Qwen25VLChatHandler",
    "minicpmv26": "MiniCPMv26ChatHandler", "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler", "llama3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "obsidian": "ObsidianChatHandler",
}


def _has_chat_template(path: str) -> bool:
    try:
        header = read_header(path, until=lambda md: "tokenizer.chat_template" in md)
    except (GGUFError, OSError):
        return False
    return "tokenizer.chat_template" in header.metadata


def choose_handler(spec: ModelSpec, has_template: bool) -> str:
    """The chat handler for a vision pair: the spec's, else from the GGUF metadata.

    A text model with its own chat template goes through ``mtmd`` (llama.cpp's generic
    multimodal path, which uses that template); otherwise the projector type decides."""
    if spec.chat_handler != "auto":
        return spec.chat_handler
    if has_template:
        return "mtmd"
    try:
        projector = read_header(spec.mmproj, until=lambda md: "clip.projector_type" in md).metadata.get(
            "clip.projector_type", "")
    except (GGUFError, OSError) as e:
        raise ModelLoadError(f"cannot read the projector {spec.mmproj}: {e}") from None
    if "qwen2" in str(projector):
        return "qwen25vl"
    if "minicpm" in str(projector):
        return "minicpmv26"
    return "llava15"


def _vision_handler(spec: ModelSpec, has_template: bool) -> tuple[Any, str]:
    import llama_cpp.llama_chat_format as chat_format

    if not os.path.isfile(spec.mmproj):
        raise ModelNotFound(f"projector file not found: {spec.mmproj}")
    try:
        read_header(spec.mmproj, until=lambda md: True)
    except GGUFError as e:
        raise ModelLoadError(f"cannot load the projector {spec.mmproj}: {e}") from None
    name = choose_handler(spec, has_template)
    cls = getattr(chat_format, _HANDLERS[name], None)
    if cls is None:
        raise ModelLoadError(f"chat handler {name!r} is not in this llama-cpp-python")
    # verbose=True: verbose=False swaps the process-wide stdout/stderr while it loads (see llama_cpp())
    return cls(clip_model_path=spec.mmproj, verbose=True), name


def _release_freed_memory() -> None:
    """Hand the freed model's heap back to the OS (glibc's malloc_trim). Models load on worker
    threads, so their buffers live in per-thread malloc arenas that glibc rarely trims by itself;
    without this, rotating models grows a kernel's memory by about a megabyte per load."""
    try:
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _find_stop(text: str, stops: list[str], emitted: int) -> int | None:
    """Index where the earliest stop string starts, searching only text not yet emitted."""
    found = [i for s in stops if (i := text.find(s, max(0, emitted - len(s) + 1))) != -1]
    return min(found) if found else None


def _held_back(text: str, stops: list[str], emitted: int) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop string."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text) - emitted), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


def _native_reason(lines) -> str | None:
    errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
    return errors[-1] if errors else None


def load(spec: ModelSpec, abort: threading.Event | None = None) -> LocalModel:
    return LocalModel.load(spec, abort=abort)
