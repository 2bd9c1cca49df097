"""In-process engine: llama-cpp-python.

One ``LocalModel`` wraps one ``llama_cpp.Llama``: it loads the model (with the llama.cpp options
of ``llama_options``), builds a prompt the way the model expects it (chat template when the GGUF
has one, a question/answer completion prompt when it doesn't, or the raw text) and streams an
answer through our own generation loop (``llama_loop``), which stops within one token when asked.
A ``Llama`` is not thread-safe: the model's queue (``model_queue.ModelQueue``, one slot) makes
sure one request at a time calls ``prepare`` and ``stream``.

Helpers, one job each: ``llama_loop`` (decoding, the KV cache, saved conversation states),
``llama_sampler`` (choosing tokens), ``llama_private`` (every private llama-cpp-python name),
``llama_chat`` (the chat template, its end-of-turn stops, the thinking markers),
``llama_vision`` (chat handlers for a projector), ``llama_memory`` (mlock, freeing memory),
``llama_grammar`` (checking GBNF), ``stops`` (stop strings).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError

from .. import default_model
from .. import settings as settings_mod
from ..chat_templates import compile_error
from ..errors import ConfigError, ModelLoadError, ModelNotFound, PromptTooLong
from ..gguf_header import GGUFError, diagnose, read_header
from ..prompts import QA_STOP, TurnLike, image_messages, qa_text, raw_text
from ..thinking import ThinkingTags
from . import kv_states, llama_chat, llama_loop, llama_memory, llama_options, llama_vision
from . import llama_private as private
from .base import Prepared, StreamStats
from .llama_grammar import checked_grammar
from .llama_lookup import generate_lookup
from .llama_sampler import Sampler
from .stops import StopMatcher, stop_list

if TYPE_CHECKING:
    from ..conversation import Conversation
    from ..images import Image
    from ..specs import ModelSpec


def _trained_context(path: str) -> int | None:
    """The GGUF's trained context length (read from the header only), or None if it has none."""

    def enough(md: dict[str, Any]) -> bool:
        arch = md.get("general.architecture")
        return arch is not None and f"{arch}.context_length" in md

    try:
        return read_header(path, until=enough).context_length
    except GGUFError as e:
        raise ModelLoadError(f"cannot load {path}: {e}") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None


class LocalModel:
    """A GGUF model loaded in this process (``kind`` "local", or "vision" with a projector)."""

    def __init__(
        self,
        spec: ModelSpec,
        llm: Any,
        *,
        n_ctx: int,
        mlock: str,
        chat_template: str | None,
        chat_handler: str | None = None,
    ):
        self.spec: ModelSpec = spec
        self.kind: str = "vision" if spec.mmproj else "local"
        self.concurrency: int = 1  # a Llama runs one generation at a time
        self.llm: Any = llm  # the llama_cpp.Llama
        self.n_ctx = n_ctx  # the usable context window (tokens)
        self.mlock = mlock  # "on", "off" or "off (fallback: reason)"
        self.chat_template = chat_template  # the GGUF's tokenizer.chat_template
        self.chat_handler = chat_handler  # the vision chat handler's name
        self._closed = False
        self._lc: Any = private.install_hooks()  # the llama_cpp package
        self.thinking_tags: ThinkingTags | None = None  # set by load (template, tokenizer, alias)
        self._chat = llama_chat.ChatSide(llm, spec, chat_template, None)  # chat prompts
        self._kv = llama_loop.KVContext(self._lc, llm, n_ctx)  # what the KV cache holds
        self._saved = kv_states.SavedStates()  # other conversations' KV state, while one runs
        self.device: dict[str, Any] = {}  # device, gpu_layers, flash_attn, kv_type (llama_options)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, spec: ModelSpec, abort: threading.Event | None = None) -> LocalModel:
        """Load ``spec`` (on a worker thread); ``abort`` set makes a running load give up."""
        lc = private.install_hooks()
        path = spec.path
        if not os.path.exists(path) and path == str(default_model.path()) and default_model.is_installed():
            default_model.ensure()
        if not os.path.exists(path):
            raise ModelNotFound(f"model file not found: {path}")
        size = os.path.getsize(path)
        n_ctx = spec.n_ctx
        trained = _trained_context(path)
        if trained and n_ctx > trained:
            n_ctx = trained
        options = llama_options.llama_kwargs(spec)  # checked before anything loads
        use_mlock, mlock = llama_memory.plan_mlock(spec.use_mlock, size)
        handler, handler_name = llama_vision.vision_handler(spec) if spec.mmproj else (None, None)
        with private.capture_native_log(5000) as lines, private.abortable_load(abort):
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
                    verbose=True,  # see llama_private.install_hooks: output is routed, not printed
                    **options,
                )
            except ValueError as e:
                if abort is not None and abort.is_set():
                    raise ModelLoadError(f"loading {path} was abandoned (unloaded or shutting down)") from None
                reason = diagnose(path) or private.native_reason(lines) or str(e)
                raise ModelLoadError(f"cannot load {path}: {reason}") from None
            except TemplateError as e:  # llama-cpp-python compiles the GGUF's templates as it loads
                raise compile_error(spec.display_name, e) from None
        if handler is not None:
            llama_vision.init_projector(handler, llm, spec)
        llm.verbose = False  # no timing prints per generation
        if use_mlock and llama_memory.refused_by_os(lines):
            mlock = llama_memory.REFUSED_BY_OS
        # llama.cpp may pad the KV cache beyond n_ctx, but llama-cpp-python sizes its token
        # buffer to the n_ctx we asked for: the smaller one is the real limit.
        model = cls(
            spec,
            llm,
            n_ctx=min(n_ctx, llm.n_ctx()),
            mlock=mlock,
            chat_template=llm.metadata.get("tokenizer.chat_template"),
            chat_handler=handler_name,
        )
        model.device = llama_options.device_info(llm, spec, lines)
        model.thinking_tags, model._kv.shown_special = llama_chat.thinking_of(llm, spec, model.chat_template)
        model._chat.tags = model.thinking_tags
        return model

    # ---- prompting -----------------------------------------------------------------------

    def prepare(
        self,
        prompt: str,
        *,
        raw: bool = False,
        system: str | None = None,
        conversation: Conversation | None = None,
        max_tokens: int = 0,
        images: Sequence[Image] | None = None,
        think: bool | None = None,
    ) -> Prepared:
        """Tokenize the request the way this model expects it.

        With a ``conversation``, earlier turns come first; the prompt continues the exact tokens
        of the previous context when its text does (so llama.cpp reuses the KV cache), and the
        oldest turns are dropped until prompt + ``max_tokens`` fits the context window.
        """
        self._check_open()
        llm = self.llm
        if conversation is not None and system is None:
            system = conversation.system
        turns: list[TurnLike] = list(conversation.turns) if conversation is not None else []
        if images:
            return self._prepare_vision(prompt, images, system, turns)
        if raw:
            mode = "raw"
        elif self.chat_template and self.spec.chat != "completion":
            mode = "chat"
        else:
            mode = "completion"
        special = mode != "raw"
        while True:
            text, stop, add_bos = self._render(mode, turns, prompt, system, think)
            tokens: list[int] | None = None
            if (
                conversation is not None
                and conversation.ctx_tokens
                and len(turns) == len(conversation.turns)
                and text.startswith(conversation.ctx_text)
            ):
                rest = text[len(conversation.ctx_text) :]
                tokens = list(conversation.ctx_tokens) + (
                    llm.tokenize(rest.encode("utf-8"), add_bos=False, special=special) if rest else []
                )
            if tokens is None:
                add_bos = add_bos and private.add_bos(llm)
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
        session = conversation.name if conversation is not None else None
        prepared = Prepared(
            mode=mode, text=text, tokens=tokens, stop=stop, turns_used=len(turns), system=system, session=session
        )
        tags = self.thinking_tags if mode == "chat" else None
        if tags is not None:
            at = text.rfind(prompt)
            prepared.thinking = tags
            prepared.thinking_open = tags.starts_open(text[at + len(prompt) :] if at != -1 else text[-200:])
        prepared.think_switch = mode == "chat" and self._chat.can_switch_thinking()
        return prepared

    def _prepare_vision(
        self, prompt: str, images: Sequence[Image], system: str | None, turns: list[TurnLike]
    ) -> Prepared:
        """Chat messages with image parts, for the vision chat handler (which evaluates the images)."""
        if self.chat_handler is None:
            raise ConfigError(f"{self.spec.display_name} is a text-only model: it cannot take images")
        messages = image_messages(turns, prompt, system, images)
        return Prepared(mode="vision", text=prompt, messages=messages, turns_used=len(turns), system=system)

    def _render(
        self, mode: str, turns: list[TurnLike], prompt: str, system: str | None, think: bool | None = None
    ) -> tuple[str, list[str], bool]:
        """The prompt text, the stop strings it needs, and whether a BOS token may go in front."""
        if mode == "raw":
            return raw_text(turns, prompt), [], True
        if mode == "chat":
            return self._chat.render(turns, prompt, system, think)
        return qa_text(turns, prompt, system), list(QA_STOP), True

    # ---- generation ----------------------------------------------------------------------

    def stream(
        self,
        prepared: Prepared,
        *,
        max_tokens: int,
        should_stop: Callable[[], bool],
        stats: StreamStats,
        deadline: float | None = None,
        prompt_batch: int | None = None,
        **sampling: Any,
    ) -> Generator[str, None, None]:
        """Yield text pieces as tokens are generated (one request at a time: see the module doc).

        Text goes through our own loop (``llama_loop``): ``should_stop`` is polled before every
        token and between prompt batches, so a Stop or the deadline (which reaches us through it)
        ends the work within one token or one batch. ``prompt_batch`` makes those batches smaller
        (a request that must give way soon). Images go through the vision chat handler.
        """
        self._check_open()
        seed = sampling.pop("seed", None)
        grammar = sampling.pop("grammar", None)
        draft = sampling.pop("draft", None)
        extra_stop = sampling.pop("stop", None)
        kwargs = {k: v for k, v in sampling.items() if v is not None}
        if grammar is not None:
            grammar = checked_grammar(self._lc, self.llm, grammar)
        if prepared.mode == "vision":
            yield from self._stream_vision(prepared, max_tokens, should_stop, stats, seed, grammar, extra_stop, kwargs)
            return
        kv = self._kv
        tokens = prepared.tokens
        kv.enter(prepared.session, tokens, self._saved, settings_mod.current().kv_cache_budget_bytes)
        if not llama_loop.evaluate_prompt(kv, tokens, should_stop, stats, prompt_batch):
            return  # stopped while reading a long prompt
        sampler = Sampler(self._lc, kv.ctx, kv.vocab, seed=seed, grammar=grammar, history=tokens, **kwargs)
        stops = StopMatcher(stop_list(prepared.stop, extra_stop))
        try:
            if draft == "lookup" and sampler.plain_greedy:
                yield from generate_lookup(
                    kv, sampler, stops, max_tokens=max_tokens, should_stop=should_stop, stats=stats
                )
            else:
                yield from llama_loop.generate(
                    kv, sampler, stops, max_tokens=max_tokens, should_stop=should_stop, stats=stats
                )
        finally:
            sampler.close()
            if kv.tokens[: len(tokens)] == tokens:  # what the cache holds, for a conversation's next turn
                stats.context_tokens = list(kv.tokens)
                stats.context_text = llama_loop.context_text(kv, prepared.text, len(tokens))

    def _stream_vision(
        self,
        prepared: Prepared,
        max_tokens: int,
        should_stop: Callable[[], bool],
        stats: StreamStats,
        seed: int | None,
        grammar: str | None,
        extra_stop: Any,
        kwargs: dict[str, Any],
    ) -> Generator[str, None, None]:
        """Images: the vision chat handler evaluates them and streams through llama-cpp-python."""
        # llama-cpp-python's own calls take the context over: a conversation's state is kept first
        self._kv.enter(None, [], self._saved, settings_mod.current().kv_cache_budget_bytes)
        self._kv.clear()
        if seed is not None and seed >= 0:
            kwargs["seed"] = seed
        if grammar is not None:
            kwargs["grammar"] = self._lc.LlamaGrammar.from_string(grammar, verbose=False)
        if extra_stop is not None:
            kwargs["stop"] = extra_stop
        yield from llama_vision.stream_vision(
            self.llm, prepared.messages or [], max_tokens=max_tokens, should_stop=should_stop, stats=stats, **kwargs
        )

    def context_tokens(self) -> list[int]:
        """The tokens the KV cache holds now (prompt and evaluated answer of the last text request)."""
        return list(self._kv.tokens)

    def forget_context(self) -> None:
        """Empty the KV cache and drop every saved conversation state (the next prompt is read whole)."""
        self._kv.clear()
        self._saved.drop()

    # ---- the rest of the Engine protocol -----------------------------------------------------

    def info(self) -> dict[str, Any]:
        kv_states, kv_bytes = self._saved.summary()
        return {
            "n_ctx": self.n_ctx,
            "mlock": self.mlock,
            "chat_template": self._chat.name,
            "chat_handler": self.chat_handler,
            "kv_states": kv_states,
            "kv_bytes": kv_bytes,
            **self.device,
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._saved.drop()
            self.llm.close()
            llama_memory.release_freed_memory()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")
