"""Build a tiny, random-weight *vision pair* (text GGUF + mmproj GGUF) for tests.

The pair is what a LLaVA-1.5 style model looks like to llama.cpp's multimodal
loader (``tools/mtmd``: ``clip.cpp`` / ``clip-impl.h`` / ``mtmd.cpp`` in the
llama.cpp vendored by llama-cpp-python 0.3.36):

* the **text model** is :func:`tiny_gguf.write_tiny_model` (a llama GGUF) with
  a ChatML template that also understands list-of-parts message content
  (:data:`VISION_CHATML_TEMPLATE`), so both ``Llava15ChatHandler`` (which
  brings its own ``USER:/ASSISTANT:`` template) and ``MTMDChatHandler`` (which
  renders the GGUF's ``tokenizer.chat_template``) work with it;
* the **mmproj** is a CLIP ViT vision encoder plus a two-layer MLP projector
  (``clip.projector_type = "mlp"``, tensors ``mm.0.*`` / ``mm.2.*``) whose
  output width equals the text model's ``n_embd``.

Everything is float32 and seeded, so the same arguments give byte-identical
files.  The default pair is ~1.2 MB (text 1.06 MB + mmproj 0.12 MB), is
written in ~50 ms, and an image becomes ``(image_size // patch_size) ** 2``
= 16 prompt tokens.

Public API
----------
``write_tiny_vision_pair(dir, ...) -> (text_model_path, mmproj_path)``
``write_mismatched_projector(dir) -> mmproj_path``
    An mmproj whose output width does not match the pair's text model:
    ``mtmd_init_from_file`` refuses it ("mismatch between text model
    (n_embd = 64) and mmproj (n_embd = 32)").
``write_mmproj(path, ...)``
    The lower-level projector writer.
``png_bytes(width, height, seed=0)``
    A real RGB PNG (zlib + struct, no Pillow needed) to feed the handler.

How llama.cpp reads the mmproj (so the names below are not arbitrary)
-----------------------------------------------------------------------
Keys (``clip-impl.h``): ``clip.has_vision_encoder``, ``clip.projector_type``,
``clip.vision.{embedding_length, feed_forward_length, block_count,
projection_dim, attention.head_count, attention.layer_norm_epsilon}``,
``clip.vision.{image_size, patch_size, image_mean, image_std}`` are required
(``image_mean``/``image_std`` must have 3 floats); ``clip.use_gelu`` is
optional (false -> quick-GELU, as in CLIP).

Tensors (numpy shape = reversed ggml ``ne``), ``E`` = vision width, ``F`` =
vision FFN width, ``P`` = patch size, ``N`` = number of patches, ``H`` =
projector hidden width, ``T`` = text ``n_embd``:

=============================  ==============  ===========================
name                           numpy shape     note
=============================  ==============  ===========================
``v.patch_embd.weight``        (E, 3, P, P)    conv2d kernel, stride P
``v.class_embd``               (E,)            CLS token (skipped by the
                                               projector's ``patches`` rows)
``v.position_embd.weight``     (N + 1, E)
``v.pre_ln.weight/bias``       (E,)
``v.blk.i.ln1.weight/bias``    (E,)
``v.blk.i.attn_{q,k,v,out}``   (E, E) + (E,)   ``.weight`` / ``.bias``
``v.blk.i.ln2.weight/bias``    (E,)
``v.blk.i.ffn_up.weight``      (F, E) + (F,)   fc1 (F != E, otherwise the
``v.blk.i.ffn_down.weight``    (E, F) + (E,)   loader's legacy "swapped
                                               up/down" heuristic kicks in)
``mm.0.weight/bias``           (H, E), (H,)    projector linear 1 (+GELU)
``mm.2.weight/bias``           (T, H), (T,)    projector linear 2; its
                                               ``ne[1]`` is the mmproj
                                               output width checked
                                               against the text model
=============================  ==============  ===========================

LLaVA uses the *second to last* encoder layer, so with ``n_layer=2`` only
block 0 is evaluated (block 1 is loaded but unused) - that is how real
LLaVA mmproj files work too.

Behaviour seen with llama-cpp-python 0.3.36 (worth knowing when testing)
--------------------------------------------------------------------------
* Both handlers create the mtmd context *lazily*, on the first
  ``create_chat_completion``; call ``handler._init_mtmd_context(llm)`` right
  after ``Llama(...)`` to load (and validate) the projector eagerly.
* Any image is resized to ``image_size`` (a 1500x900 PNG still costs 16
  tokens); GIF/JPEG/PNG decode (stb_image); non-image bytes raise
  ``ValueError("Failed to create bitmap from image bytes")`` and the model
  stays usable.
* Text is tokenized separately on each side of the image, and the SPM
  tokenizer adds a leading space to each piece, so "with image minus without
  image" is ``n_image_tokens`` only when the image sits right before a
  special token (``MTMDChatHandler``, image after the text: 41 vs 25);
  ``Llava15ChatHandler`` puts images first and gives 137 vs 120.  Comparing
  two pairs with different ``image_size`` is exact (64 vs 16 tokens).
* mtmd/clip log through their own logger (``mtmd_cpp.mtmd_helper_log_set``),
  not ``llama_log_set``: even with ``verbose=False`` ~13 lines per image reach
  stderr unless a callback is installed; the load error text ("mismatch
  between text model ...") only reaches that logger.
"""

from __future__ import annotations

import os
import pathlib
import struct
import zlib
from typing import Final

import gguf
import numpy as np

from tiny_gguf import write_tiny_model

__all__ = [
    "CLIP_IMAGE_MEAN",
    "CLIP_IMAGE_STD",
    "TEXT_N_EMBD",
    "VISION_CHATML_TEMPLATE",
    "n_image_tokens",
    "png_bytes",
    "write_mismatched_projector",
    "write_mmproj",
    "write_tiny_vision_pair",
]

#: Embedding width of the pair's text model (= the projector's output width).
TEXT_N_EMBD: Final[int] = 64

#: OpenAI CLIP normalisation constants (as in every LLaVA mmproj).
CLIP_IMAGE_MEAN: Final[tuple[float, float, float]] = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD: Final[tuple[float, float, float]] = (0.26862954, 0.26130258, 0.27577711)

#: ChatML that accepts ``content`` as a string *or* a list of parts
#: (``{"type": "text", "text": ...}``; anything else is skipped).
#: ``MTMDChatHandler`` renders the GGUF template with images already replaced
#: by text parts holding the media marker (``<__media__>``), so this template
#: is what puts the image into the prompt for that handler.
VISION_CHATML_TEMPLATE: Final[str] = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def n_image_tokens(image_size: int, patch_size: int) -> int:
    """Prompt tokens one image costs with an ``mlp`` projector: one per patch."""
    return (image_size // patch_size) ** 2


def write_mmproj(
    path: str | os.PathLike[str],
    *,
    n_embd_out: int = TEXT_N_EMBD,
    image_size: int = 32,
    patch_size: int = 8,
    n_embd: int = 32,
    n_head: int = 4,
    n_ff: int = 64,
    n_layer: int = 2,
    n_proj_hidden: int | None = None,
    seed: int = 0,
) -> pathlib.Path:
    """Write a LLaVA-1.5 style mmproj (CLIP ViT + MLP projector) GGUF.

    Args:
        path: Destination file (parent directories are created).
        n_embd_out: Projector output width; must equal the text model's
            ``n_embd`` or ``mtmd_init_from_file`` refuses the pair.
        image_size: Square input resolution; every image is resized to it.
        patch_size: ViT patch size; ``image_size`` must be a multiple of it.
        n_embd: Vision transformer width (a multiple of ``n_head``).
        n_head: Vision attention heads.
        n_ff: Vision FFN width (must differ from ``n_embd``, see module doc).
        n_layer: Encoder blocks (LLaVA evaluates ``n_layer - 1`` of them).
        n_proj_hidden: Projector hidden width (default ``n_embd_out``, as in
            LLaVA 1.5).
        seed: Seed for ``numpy.random.default_rng``.

    Returns:
        ``pathlib.Path(path)``.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    if n_ff == n_embd:
        raise ValueError("n_ff must differ from n_embd (llama.cpp would swap ffn_up/ffn_down)")
    if n_layer < 2:
        raise ValueError("n_layer must be >= 2 (LLaVA uses the second to last layer)")
    hidden = n_embd_out if n_proj_hidden is None else n_proj_hidden
    n_pos = n_image_tokens(image_size, patch_size) + 1  # + CLS

    rng = np.random.default_rng(seed)
    f32 = np.float32

    def normal(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(f32)

    def ln(width: int) -> list[np.ndarray]:
        return [(1.0 + rng.uniform(-0.1, 0.1, width)).astype(f32), normal((width,), 0.02)]

    tensors: list[tuple[str, np.ndarray]] = [
        ("v.patch_embd.weight", normal((n_embd, 3, patch_size, patch_size), 0.05)),
        ("v.class_embd", normal((n_embd,), 0.1)),
        ("v.position_embd.weight", normal((n_pos, n_embd), 0.1)),
    ]
    w, b = ln(n_embd)
    tensors += [("v.pre_ln.weight", w), ("v.pre_ln.bias", b)]
    for i in range(n_layer):
        p = f"v.blk.{i}"
        ln1_w, ln1_b = ln(n_embd)
        ln2_w, ln2_b = ln(n_embd)
        tensors += [
            (f"{p}.ln1.weight", ln1_w),
            (f"{p}.ln1.bias", ln1_b),
            (f"{p}.attn_q.weight", normal((n_embd, n_embd), 0.1)),
            (f"{p}.attn_q.bias", normal((n_embd,), 0.02)),
            (f"{p}.attn_k.weight", normal((n_embd, n_embd), 0.1)),
            (f"{p}.attn_k.bias", normal((n_embd,), 0.02)),
            (f"{p}.attn_v.weight", normal((n_embd, n_embd), 0.1)),
            (f"{p}.attn_v.bias", normal((n_embd,), 0.02)),
            (f"{p}.attn_out.weight", normal((n_embd, n_embd), 0.05)),
            (f"{p}.attn_out.bias", normal((n_embd,), 0.02)),
            (f"{p}.ln2.weight", ln2_w),
            (f"{p}.ln2.bias", ln2_b),
            (f"{p}.ffn_up.weight", normal((n_ff, n_embd), 0.1)),
            (f"{p}.ffn_up.bias", normal((n_ff,), 0.02)),
            (f"{p}.ffn_down.weight", normal((n_embd, n_ff), 0.05)),
            (f"{p}.ffn_down.bias", normal((n_embd,), 0.02)),
        ]
    # Projector.  Row 0 of the output is the constant 0.5 (zero weights, bias
    # 0.5): tiny_gguf's token embeddings all carry 0.5 in channel 0 (its
    # "constant channel" that keeps control tokens unreachable), so image
    # embeddings look like token embeddings to the text model.
    mm2_w = normal((n_embd_out, hidden), 0.5 / np.sqrt(hidden))
    mm2_b = normal((n_embd_out,), 0.05)
    mm2_w[0, :] = 0.0
    mm2_b[0] = 0.5
    tensors += [
        ("mm.0.weight", normal((hidden, n_embd), 1.0 / np.sqrt(n_embd))),
        ("mm.0.bias", normal((hidden,), 0.02)),
        ("mm.2.weight", mm2_w),
        ("mm.2.bias", mm2_b),
    ]

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, "clip")
    writer.add_name("tiny-test-mmproj")
    writer.add_description("image encoder for LLaVA (tiny, random weights, for tests)")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.projection_dim", n_embd_out)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_array("clip.vision.image_mean", list(CLIP_IMAGE_MEAN))
    writer.add_array("clip.vision.image_std", list(CLIP_IMAGE_STD))
    writer.add_bool("clip.use_gelu", False)
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def write_tiny_vision_pair(
    dir: str | os.PathLike[str],
    *,
    image_size: int = 32,
    patch_size: int = 8,
    seed: int = 0,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``tiny-vision.gguf`` and ``tiny-vision-mmproj.gguf`` into ``dir``.

    The text model has ``n_embd`` = :data:`TEXT_N_EMBD` (64) and the
    :data:`VISION_CHATML_TEMPLATE`; the projector outputs 64-wide
    embeddings.  One image costs ``n_image_tokens(image_size, patch_size)``
    prompt tokens (16 by default).

    Returns:
        ``(text_model_path, mmproj_path)``.
    """
    d = pathlib.Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    text = write_tiny_model(
        d / "tiny-vision.gguf",
        n_embd=TEXT_N_EMBD,
        chat_template=VISION_CHATML_TEMPLATE,
        seed=seed,
    )
    mmproj = write_mmproj(
        d / "tiny-vision-mmproj.gguf",
        n_embd_out=TEXT_N_EMBD,
        image_size=image_size,
        patch_size=patch_size,
        seed=seed + 1,
    )
    return text, mmproj


def write_mismatched_projector(dir: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``tiny-vision-mmproj-mismatched.gguf`` into ``dir``.

    A valid mmproj whose output width (32) differs from the text model of
    :func:`write_tiny_vision_pair` (64).  llama.cpp rejects the pair when the
    mtmd context is created: ``mtmd_init_from_file`` logs ``mismatch between
    text model (n_embd = 64) and mmproj (n_embd = 32)`` and returns NULL,
    which llama-cpp-python's handlers turn into ``ValueError("Failed to load
    mtmd context from: <path>")``.
    """
    return write_mmproj(
        pathlib.Path(dir) / "tiny-vision-mmproj-mismatched.gguf",
        n_embd_out=TEXT_N_EMBD // 2,
    )


def png_bytes(width: int = 40, height: int = 24, *, seed: int = 0) -> bytes:
    """Return a valid 8-bit RGB PNG of random pixels (no Pillow needed).

    llama.cpp decodes it with stb_image (``mtmd_helper_bitmap_init_from_buf``)
    and resizes it to the projector's ``image_size``.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
