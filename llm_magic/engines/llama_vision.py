"""Vision for the local engine: picking and building llama-cpp-python's chat handler for a text
model + projector (mmproj) pair, the chat messages with image parts, and streaming through the
handler (it encodes the images and evaluates the prompt itself)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, ModelNotFound
from ..gguf_header import GGUFError, read_header
from . import llama_private as private
from .base import StreamStats

if TYPE_CHECKING:
    from ..specs import ModelSpec

# AskMagics' chat_handler names -> llama_cpp.llama_chat_format classes
HANDLERS: dict[str, str] = {
    "mtmd": "MTMDChatHandler",
    "gemma3": "MTMDChatHandler",
    "gemma4": "Gemma4ChatHandler",
    "llava15": "Llava15ChatHandler",
    "llava16": "Llava16ChatHandler",
    "qwen25vl": "Qwen25VLChatHandler",
    "minicpmv26": "MiniCPMv26ChatHandler",
    "moondream": "MoondreamChatHandler",
    "nanollava": "NanoLlavaChatHandler",
    "llama3-vision-alpha": "Llama3VisionAlphaChatHandler",
    "obsidian": "ObsidianChatHandler",
}


def has_chat_template(path: str) -> bool:
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
            "clip.projector_type", ""
        )
    except (GGUFError, OSError) as e:
        raise ModelLoadError(f"cannot read the projector {spec.mmproj}: {e}") from None
    if "qwen2" in str(projector):
        return "qwen25vl"
    if "minicpm" in str(projector):
        return "minicpmv26"
    return "llava15"


def vision_handler(spec: ModelSpec) -> tuple[Any, str]:
    """The chat handler for ``spec`` (its projector not loaded yet: see ``init_projector``) and its name."""
    if not os.path.isfile(spec.mmproj):
        raise ModelNotFound(f"projector file not found: {spec.mmproj}")
    try:
        read_header(spec.mmproj, until=lambda md: True)
    except GGUFError as e:
        raise ModelLoadError(f"cannot load the projector {spec.mmproj}: {e}") from None
    name = choose_handler(spec, has_template=has_chat_template(spec.path))
    import llama_cpp.llama_chat_format as chat_format

    cls = getattr(chat_format, HANDLERS[name], None)
    if cls is None:
        raise ModelLoadError(f"chat handler {name!r} is not in this llama-cpp-python")
    # verbose=True: verbose=False swaps the process-wide stdout/stderr while it loads (see install_hooks)
    return cls(clip_model_path=spec.mmproj, verbose=True), name


def init_projector(handler: Any, llm: Any, spec: ModelSpec) -> None:
    """Load the projector now (llama-cpp-python would on the first image), so that a projector
    that does not fit the model is reported at load time. Closes ``llm`` on failure."""
    with private.capture_native_log() as lines:
        try:
            private.init_projector(handler, llm)
        except ValueError:
            reason = private.native_reason(lines) or "llama.cpp could not load it"
            llm.close()
            raise ModelLoadError(f"the projector {spec.mmproj} does not fit {spec.path}: {reason}") from None


def stream_vision(
    llm: Any,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    should_stop: Callable[[], bool],
    stats: StreamStats,
    **kwargs: Any,
) -> Generator[str, None, None]:
    """Through the vision chat handler: it encodes the images and evaluates the prompt, then
    streams. It takes no stopping criteria, so a stop closes the stream after the current token."""
    chunks = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, stream=True, **kwargs)
    finish = None
    try:
        for chunk in chunks:
            if stats.first_sample_at is None:
                stats.first_sample_at = time.monotonic()
                stats.n_prompt_tokens = stats.n_prompt_evaluated = private.n_tokens(llm)  # images included
            choice = chunk["choices"][0]
            finish = choice.get("finish_reason") or finish
            piece = choice.get("delta", {}).get("content")
            if piece:
                yield piece
            if should_stop():
                break
    finally:
        chunks.close()
    generated = max(0, private.n_tokens(llm) - stats.n_prompt_tokens)
    stats.n_tokens = generated + (1 if finish == "length" else 0)
    stats.finish_reason = finish
