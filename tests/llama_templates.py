"""llama.cpp's own chat templates (vendored in the llama-cpp-python sdist, fetched with pip the
way the llama-bench build does) and tiny GGUF models that carry one, with the template's markers
as real special tokens of the tokenizer."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tiny_gguf import write_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

# a template's special tokens: <|im_start|>, <｜User｜>, <start_of_turn>, <turn|>, <think>, [INST], [gMASK], ...
_MARKER = re.compile(r"</?[|｜]?[A-Za-z_][^<>\s{}%'\"+()]{0,40}?[|｜]?>|\[/?[A-Za-z_]{3,20}\]")
_BOS = ("<|begin_of_text|>", "<bos>", "<｜begin▁of▁sentence｜>", "<|startoftext|>")
_EOS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<turn|>",
    "<|return|>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
    "<|END_OF_TURN_TOKEN|>",
)


def _vendored_templates() -> tuple[list[Path], str]:
    """The .jinja templates of the sdist's llama.cpp (the sdist fetched with pip like the llama-bench
    build does), or ([], why not)."""
    try:
        from llama_bench_build import vendored_llama_cpp

        vendor, why = vendored_llama_cpp(log=lambda _s: None)
    except Exception as e:  # noqa: BLE001 - no pip, no network: the reason is the skip message
        vendor, why = None, f"{type(e).__name__}: {e}"
    if vendor is None:
        return [], why
    found = sorted((vendor / "models" / "templates").glob("*.jinja"))
    return found, "" if found else f"no templates in {vendor / 'models' / 'templates'}"


TEMPLATES, WHY_NONE = _vendored_templates()


def template_model(
    path: Path, out_dir: Path, user_tokens: tuple[str, ...] = (), n_ctx_train: int = 8192
) -> tuple[Path, list[str], str]:
    """A tiny GGUF carrying the template at ``path``, its special tokens real tokens (control
    tokens, but ``user_tokens`` user-defined: shown as text, like Qwen3's ``<think>``); returns
    (the model, the special tokens, the BOS text)."""
    source = path.read_text(encoding="utf-8")
    specials = sorted({m for m in _MARKER.findall(source) if m not in ("<s>", "</s>", "<unk>")})
    bos = next((b for b in _BOS if b in source), "<s>")
    eos = next((e for e in _EOS if e in source), "</s>")
    specials += [t for t in (bos, eos) if t not in specials and t not in ("<s>", "</s>")]
    user = [t for t in user_tokens if t in specials]
    model = write_tiny_model(
        out_dir / f"{path.stem}.gguf",
        chat_template=source,
        special_tokens=[t for t in specials if t not in user],
        user_tokens=user,
        bos_token=bos,
        eos_token=eos,
        n_ctx_train=n_ctx_train,
        n_vocab_extra=400,
        add_space_prefix=False,  # the prompt's text comes back exactly as the template wrote it
    )
    return model, specials, bos


def template_path(stem: str) -> Path | None:
    """The vendored template named ``stem`` (e.g. ``Qwen-Qwen3-0.6B``), or None when absent."""
    return next((p for p in TEMPLATES if p.stem == stem), None)
