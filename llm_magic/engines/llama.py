"""In-process engine: llama-cpp-python.

One ``LocalModel`` wraps one ``llama_cpp.Llama``. It knows how to build a prompt for that model
(chat template when the GGUF has one, a question/answer completion prompt when it doesn't, or the
raw text) and how to stream a completion that stops within one token when asked to.
A ``Llama`` is not thread-safe: the model's queue (``model_queue.ModelQueue``, one slot) makes
sure one request at a time calls ``prepare`` and ``stream``.

Helpers, one job each: ``llama_private`` (every private llama-cpp-python name), ``llama_vision``
(chat handlers for a projector), ``llama_memory`` (mlock, freeing memory), ``stops`` (stop strings).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from .. import default_model
from ..errors import ConfigError, ModelLoadError, ModelNotFound, PromptTooLong
from ..gguf_header import GGUFError, diagnose, read_header
from ..prompts import QA_STOP, TurnLike, chat_messages, image_messages, qa_text, raw_text
from . import llama_memory, llama_vision
from . import llama_private as private
from .base import Prepared, StreamStats
from .llama_grammar import checked_grammar
from .stops import find_stop, held_back, stop_list

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
        self._chat_render: private.ChatRender | None = None  # built at the first chat prompt
        self._bos_text = ""

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
        use_mlock, mlock = llama_memory.plan_mlock(spec.use_mlock, size)
        handler, handler_name = llama_vision.vision_handler(spec) if spec.mmproj else (None, None)
        with private.capture_native_log() as lines, private.abortable_load(abort):
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
                )
            except ValueError as e:
                if abort is not None and abort.is_set():
                    raise ModelLoadError(f"loading {path} was abandoned (unloaded or shutting down)") from None
                reason = diagnose(path) or private.native_reason(lines) or str(e)
                raise ModelLoadError(f"cannot load {path}: {reason}") from None
        if handler is not None:
            llama_vision.init_projector(handler, llm, spec)
        llm.verbose = False  # no timing prints per generation
        if use_mlock and llama_memory.refused_by_os(lines):
            mlock = llama_memory.REFUSED_BY_OS
        # llama.cpp may pad the KV cache beyond n_ctx, but llama-cpp-python sizes its token
        # buffer to the n_ctx we asked for: the smaller one is the real limit.
        return cls(
            spec,
            llm,
            n_ctx=min(n_ctx, llm.n_ctx()),
            mlock=mlock,
            chat_template=llm.metadata.get("tokenizer.chat_template"),
            chat_handler=handler_name,
        )

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
            text, stop, add_bos = self._render(mode, turns, prompt, system)
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
        return Prepared(mode=mode, text=text, tokens=tokens, stop=stop, turns_used=len(turns), system=system)

    def _prepare_vision(
        self, prompt: str, images: Sequence[Image], system: str | None, turns: list[TurnLike]
    ) -> Prepared:
        """Chat messages with image parts, for the vision chat handler (which evaluates the images)."""
        if self.chat_handler is None:
            raise ConfigError(f"{self.spec.display_name} is a text-only model: it cannot take images")
        messages = image_messages(turns, prompt, system, images)
        return Prepared(mode="vision", text=prompt, messages=messages, turns_used=len(turns), system=system)

    def _render(self, mode: str, turns: list[TurnLike], prompt: str, system: str | None) -> tuple[str, list[str], bool]:
        """The prompt text, the stop strings it needs, and whether a BOS token may go in front."""
        if mode == "raw":
            return raw_text(turns, prompt), [], True
        if mode == "chat":
            return self._render_chat(turns, prompt, system)
        return qa_text(turns, prompt, system), list(QA_STOP), True

    def _render_chat(self, turns: list[TurnLike], prompt: str, system: str | None) -> tuple[str, list[str], bool]:
        render = self._chat_render
        if render is None:
            llm = self.llm
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            eos = private.token_text(llm, eos_id) if eos_id != -1 else ""
            self._bos_text = private.token_text(llm, bos_id) if bos_id != -1 else ""
            render = self._chat_render = private.chat_formatter(self.chat_template or "", eos, self._bos_text)
        text, stop = render(chat_messages(turns, prompt, system))
        # The template may already write the BOS token as text; then don't add another.
        bos = self._bos_text
        return text, stop, not (bos and text.startswith(bos))

    # ---- generation ----------------------------------------------------------------------

    def stream(
        self,
        prepared: Prepared,
        *,
        max_tokens: int,
        should_stop: Callable[[], bool],
        stats: StreamStats,
        deadline: float | None = None,
        **sampling: Any,
    ) -> Generator[str, None, None]:
        """Yield text pieces as tokens are generated (one request at a time: see the module doc).

        ``should_stop`` is polled once per sampled token (llama-cpp-python's ``stopping_criteria``)
        and between prompt batches, so a stop request ends the work within one token or one batch
        (the deadline reaches us through it). Stop strings are matched here rather than in
        llama-cpp-python, so that the token count stays exact (its ``finish_reason="stop"`` then
        always means an end-of-generation token).
        """
        self._check_open()
        seed = sampling.pop("seed", None)
        grammar = sampling.pop("grammar", None)
        extra_stop = sampling.pop("stop", None)
        kwargs = {k: v for k, v in sampling.items() if v is not None}
        if grammar is not None:
            kwargs["grammar"] = checked_grammar(self._lc, self.llm, grammar)
        if prepared.mode == "vision":
            if seed is not None and seed >= 0:
                kwargs["seed"] = seed
            if extra_stop is not None:
                kwargs["stop"] = extra_stop
            yield from llama_vision.stream_vision(
                self.llm, prepared.messages or [], max_tokens=max_tokens, should_stop=should_stop, stats=stats, **kwargs
            )
            return
        llm = self.llm
        tokens = prepared.tokens
        stats.n_prompt_tokens = len(tokens)
        reuse = self._reusable_prefix(tokens)
        stats.n_prompt_evaluated = len(tokens) - reuse
        stops = stop_list(prepared.stop, extra_stop)

        if not self._evaluate_prompt(tokens, reuse, should_stop, stats):
            return  # stopped during a long prompt

        seen_len, accepted, stopped = -1, 0, False

        def criteria(input_ids: Any, _logits: Any) -> bool:
            nonlocal seen_len, accepted, stopped
            if stats.first_sample_at is None:
                stats.first_sample_at = time.monotonic()
            stop = should_stop()
            if len(input_ids) > seen_len:  # one call per sampled token (plus a final re-check)
                seen_len = len(input_ids)
                if not stop:
                    accepted += 1
                    stats.n_tokens = accepted  # live, for progress(); exact once the stream ends
            stopped = stopped or stop
            return stop

        engine_finish = None
        text, emitted, hit = "", 0, False
        completion = llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            stream=True,
            seed=seed if seed is not None and seed >= 0 else None,
            stopping_criteria=self._lc.StoppingCriteriaList([criteria]),
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
                cut = find_stop(text, stops, emitted)
                if cut is not None:
                    if cut > emitted:
                        yield text[emitted:cut]
                    hit = True
                    break
                safe = len(text) - held_back(text, stops, emitted)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
            if not hit and stops and emitted < len(text):
                yield text[emitted:]
        finally:
            completion.close()
        self._record_context(tokens, prepared.text, stats)
        if stopped and not hit:  # our Stop/deadline ended it: the request counts what streamed
            stats.n_tokens, stats.finish_reason = max(0, accepted), None
            return
        if engine_finish == "stop" and not hit:
            accepted -= 1  # the end-of-generation token is sampled but is not part of the answer
        stats.n_tokens = max(0, accepted)
        stats.finish_reason = "stop" if hit else engine_finish

    def _record_context(self, tokens: list[int], text: str, stats: StreamStats) -> None:
        """What the KV cache holds now (prompt + evaluated generated tokens), for a conversation."""
        llm = self.llm
        n = private.n_tokens(llm)
        ids = private.input_ids(llm)
        if n < len(tokens) or list(ids[: len(tokens)]) != list(tokens):
            return
        generated = [int(t) for t in ids[len(tokens) : n]]
        stats.context_tokens = list(tokens) + generated
        stats.context_text = text + llm.detokenize(generated, prev_tokens=tokens).decode("utf-8", errors="ignore")

    def _evaluate_prompt(
        self, tokens: list[int], reuse: int, should_stop: Callable[[], bool], stats: StreamStats
    ) -> bool:
        """Evaluate a long prompt batch by batch so a deadline or Stop can act between batches.

        llama-cpp-python evaluates the whole prompt in one uninterruptible call. We evaluate all
        but its last token ourselves; ``create_completion`` then reuses that prefix from the KV cache.
        Short prompts (one batch) are left to ``create_completion``. Returns False if stopped.
        """
        llm = self.llm
        n_batch = llm.n_batch
        target = len(tokens) - 1
        if target - reuse <= n_batch or private.recurrent_or_hybrid(llm):
            return True
        private.set_n_tokens(llm, min(private.n_tokens(llm), reuse))
        first = private.n_tokens(llm)
        for start in range(first, target, n_batch):
            stats.prompt_progress(start - first)
            if should_stop():
                return False
            llm.eval(tokens[start : min(start + n_batch, target)])
        stats.prompt_progress(len(tokens) - first)  # the last token goes with the first sample, at once
        return not should_stop()

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens llama.cpp will reuse from the KV cache."""
        n = 0
        for a, b in zip(private.input_ids(self.llm), tokens, strict=False):
            if a != b:
                break
            n += 1
        return n - 1 if n == len(tokens) and n > 0 else n

    # ---- the rest of the Engine protocol -----------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"n_ctx": self.n_ctx, "mlock": self.mlock, "chat_handler": self.chat_handler}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.llm.close()
            llama_memory.release_freed_memory()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.spec.display_name} was unloaded")
