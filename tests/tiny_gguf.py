"""Build tiny, random-weight llama GGUF models for tests and benchmarks.

The models written here are real llama-architecture GGUF files that
llama-cpp-python loads in milliseconds and generates (meaningless) text from
at thousands of tokens per second.  They let the test-suite exercise the
whole load / tokenize / stream / chat pipeline without downloading anything.

Public API
----------
``write_tiny_model(path, ...)``
    Write a tiny model (optionally with a chat template) and return its path.
``CHATML_TEMPLATE``
    A small ChatML jinja template usable as ``chat_template=``.
``write_corrupt_files(dir)``
    Write files that look like models but must fail to load.

Design notes
------------
* **Determinism** - everything derives from ``numpy.random.default_rng(seed)``
  and fixed word lists, and the metadata/tensors are written in a fixed order,
  so the same arguments always give a byte-identical file.
* **Vocabulary** - a SentencePiece-style (``tokenizer.ggml.model = "llama"``)
  vocabulary: ``<unk>``, ``<s>``, ``</s>``, the 256 byte-fallback tokens
  ``<0x00>`` ... ``<0xFF>``, single printable ASCII characters (plus ``▁``
  variants of letters and digits), ``n_vocab_extra`` English word pieces and
  finally the ChatML control tokens ``<|im_start|>`` / ``<|im_end|>`` (always
  present, so the vocabulary does not depend on ``chat_template``).  Word
  pieces are added together with all their prefixes (``▁c``, ``▁ca``,
  ``▁cap``, ... ``▁capital``) so that the SentencePiece merge algorithm in
  llama.cpp can actually reach whole words when tokenizing.
* **No early stop** - tests need long generations (e.g. to test timeouts),
  so by default (``suppress_special=True``) the model can *never* emit a
  control token (``</s>``, ``<s>``, ``<unk>``, ``<|im_start|>``,
  ``<|im_end|>``) nor a byte token other than ``\\t`` / ``\\n``.  See
  :func:`_build_tensors` for the trick; it also guarantees the streamed text
  is always valid (ASCII-only) UTF-8.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Final

import gguf
import numpy as np

__all__ = [
    "CHATML_TEMPLATE",
    "IM_END",
    "IM_START",
    "write_corrupt_files",
    "write_tiny_model",
]

#: Standard ChatML template (no bos/eos tokens involved).
CHATML_TEMPLATE: Final[str] = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IM_START: Final[str] = "<|im_start|>"
IM_END: Final[str] = "<|im_end|>"

_SPM_SPACE: Final[str] = "\u2581"  # "▁", SentencePiece's word-boundary marker

# Common English words (plus a few the tests' prompts use).  Order matters:
# it fixes token ids, so only ever append to this list.
_WORDS: Final[tuple[str, ...]] = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "it",
    "for",
    "that",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "he",
    "be",
    "this",
    "are",
    "an",
    "or",
    "have",
    "had",
    "not",
    "but",
    "which",
    "were",
    "all",
    "they",
    "she",
    "her",
    "you",
    "we",
    "one",
    "their",
    "there",
    "been",
    "has",
    "would",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "capital",
    "France",
    "Paris",
    "city",
    "country",
    "answer",
    "question",
    "Q",
    "A",
    "What",
    "Where",
    "Who",
    "Why",
    "How",
    "Is",
    "The",
    "London",
    "Berlin",
    "Rome",
    "Madrid",
    "Europe",
    "name",
    "number",
    "water",
    "word",
    "part",
    "place",
    "thing",
    "house",
    "home",
    "hand",
    "eye",
    "side",
    "head",
    "light",
    "large",
    "small",
    "high",
    "low",
    "big",
    "next",
    "early",
    "young",
    "important",
    "few",
    "public",
    "bad",
    "able",
    "best",
    "better",
    "sure",
    "free",
    "true",
    "real",
    "full",
    "special",
    "easy",
    "clear",
    "late",
    "hard",
    "open",
    "left",
    "right",
    "black",
    "white",
    "red",
    "blue",
    "green",
    "hello",
    "world",
    "python",
    "code",
    "model",
    "test",
    "token",
    "text",
    "line",
    "file",
    "data",
    "value",
    "list",
)

# Syllables used to synthesise extra (deterministic) pieces once the word
# list is exhausted.
_ONSETS: Final[tuple[str, ...]] = (
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "ch",
    "sh",
    "th",
    "st",
    "tr",
    "pl",
)
_NUCLEI: Final[tuple[str, ...]] = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS: Final[tuple[str, ...]] = ("", "n", "r", "s", "t", "l", "nd", "st")

_TT = gguf.TokenType


def _prefixes(piece: str) -> list[str]:
    """Return the prefixes of ``piece`` with at least two characters, shortest first."""
    return [piece[:i] for i in range(2, len(piece) + 1)]


def _word_pieces(n: int) -> list[str]:
    """Deterministically generate ``n`` unique word pieces (``▁the``, ``▁capital``, ...)."""
    out: list[str] = []
    seen: set[str] = set()

    def candidates() -> Iterator[str]:
        for w in _WORDS:
            yield _SPM_SPACE + w
        for w in _WORDS:  # capitalised variants, e.g. "▁The"
            yield _SPM_SPACE + w[:1].upper() + w[1:]
        for w in _WORDS:  # word-internal pieces (no leading "▁")
            yield w
        for coda in _CODAS:  # synthetic syllables, then syllable pairs
            for onset in _ONSETS:
                for nucleus in _NUCLEI:
                    yield _SPM_SPACE + onset + nucleus + coda
        for s1 in (o + v for o in _ONSETS for v in _NUCLEI):
            for s2 in (o + v + c for c in _CODAS for o in _ONSETS for v in _NUCLEI):
                yield _SPM_SPACE + s1 + s2

    for word in candidates():
        for piece in _prefixes(word):
            if len(out) >= n:
                return out
            # Single characters are covered by the character pieces.
            if piece not in seen and len(piece) > 1:
                seen.add(piece)
                out.append(piece)
    raise ValueError(f"cannot generate {n} unique word pieces")  # pragma: no cover


def _build_vocab(
    n_vocab_extra: int, special_tokens: Sequence[str] = (), user_tokens: Sequence[str] = ()
) -> tuple[list[str], list[float], list[int]]:
    """Return ``(tokens, scores, token_types)`` for the SentencePiece vocabulary.

    Ids: 0 ``<unk>``, 1 ``<s>``, 2 ``</s>``, 3..258 byte tokens, then normal
    pieces, then ``<|im_start|>`` and ``<|im_end|>``, then ``special_tokens``
    (control tokens, e.g. a chat template's markers) and ``user_tokens``
    (user-defined tokens, shown as text like Qwen3's ``<think>``).
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [_TT.UNKNOWN, _TT.CONTROL, _TT.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_TT.BYTE] * 256

    normal: list[str] = [_SPM_SPACE]
    printable = [chr(c) for c in range(0x21, 0x7F)]  # "!" .. "~" (space is "▁")
    normal += printable
    normal += [_SPM_SPACE + c for c in printable if c.isalnum()]
    seen = set(normal)
    normal += [p for p in _word_pieces(n_vocab_extra + len(normal)) if p not in seen][:n_vocab_extra]
    tokens += normal
    types += [_TT.NORMAL] * len(normal)

    tokens += [IM_START, IM_END]
    types += [_TT.CONTROL, _TT.CONTROL]
    for extra, kind in ((special_tokens, _TT.CONTROL), (user_tokens, _TT.USER_DEFINED)):
        for tok in extra:
            if tok not in tokens:
                tokens.append(tok)
                types.append(kind)

    # Scores descend with the id (like a real SentencePiece model); control /
    # byte tokens get 0 as in converted llama vocabularies.
    scores = [0.0 if t != _TT.NORMAL else -float(i) for i, t in enumerate(types)]
    assert len(set(tokens)) == len(tokens), "duplicate token in tiny vocab"
    return tokens, scores, [int(t) for t in types]


def _suppressed_ids(tokens: list[str], types: list[int]) -> list[int]:
    """Token ids the model must never generate (see ``suppress_special``)."""
    allowed_bytes = {"<0x09>", "<0x0A>"}
    return [
        i
        for i, (tok, typ) in enumerate(zip(tokens, types, strict=False))
        if typ in (_TT.CONTROL, _TT.UNKNOWN) or (typ == _TT.BYTE and tok not in allowed_bytes)
    ]


def _build_tensors(
    rng: np.random.Generator,
    *,
    n_vocab: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_layer: int,
    suppressed: list[int],
) -> list[tuple[str, np.ndarray]]:
    """Create the float32 weights, in write order.

    numpy shapes are (out_features, in_features); GGUF stores the reversed
    ggml ``ne`` order, which is what llama.cpp expects.

    Two tricks shape the otherwise random weights:

    1. *Token chain (non-degenerate output).*  A purely random lm-head makes
       greedy decoding collapse into one token repeated forever ("cam cam
       cam ...").  Instead the ``output`` row of token ``next[i]`` is (a
       scaled copy of) the embedding of token ``i``, where ``next`` is a
       random cyclic permutation of all generatable tokens.  Since the final
       hidden state is dominated by the current token's embedding (the blocks
       use small weights), greedy decoding walks that single long cycle and
       produces ~``n_vocab`` tokens of varied gibberish before it can repeat;
       attention still perturbs it a little, and sampling adds variety.

    2. *Suppressed tokens ("constant channel").*  Residual channel 0 is a
       positive constant ``C`` for every token and position:

       * every token embedding has ``token_embd[:, 0] = C``;
       * nothing writes into channel 0 (row 0 of ``attn_output`` and of
         ``ffn_down`` is zero), so the residual keeps ``h[0] == C``;
       * ``output_norm`` weights are positive, so after the final RMS norm
         channel 0 is ``C * w0 / rms(h) > 0`` for *every* hidden state.

       The ``output`` rows of suppressed tokens are ``(-K, 0, ..., 0)``,
       giving them the logit ``-K * C * w0 / rms(h)``: always strongly
       negative (about -1000), whereas the chosen normal token's logit is
       positive.  Every other row has 0 in channel 0, so the constant does
       not bias normal tokens.  (An all-zero row would give logit 0, which
       random logits can undercut, hence the negative weight.)
    """
    # Scales were tuned so the chain below is followed exactly under greedy
    # decoding (blocks 2-5x stronger already start to break it into loops).
    emb_scale = 0.5  # token embeddings: dominate the residual stream
    const = emb_scale  # value of the constant channel 0
    in_scale = 0.1  # attn_q/k/v, ffn_gate/up
    out_scale = 0.02  # attn_output, ffn_down: small => gentle blocks
    head_gain = 0.2  # chain rows of the lm-head = head_gain * embedding
    kill = 1000.0  # magnitude of the suppressed tokens' lm-head weight
    head_dim = n_embd // n_head
    f32 = np.float32

    def normal(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(f32)

    def norm_weight() -> np.ndarray:
        # Positive (1 +/- 0.1), required by the suppression trick.
        return (1.0 + rng.uniform(-0.1, 0.1, n_embd)).astype(f32)

    tok_embd = normal((n_vocab, n_embd), emb_scale)
    tok_embd[:, 0] = const

    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", tok_embd)]
    for i in range(n_layer):
        attn_out = normal((n_embd, n_head * head_dim), out_scale)
        attn_out[0, :] = 0.0
        ffn_down = normal((n_embd, n_ff), out_scale)
        ffn_down[0, :] = 0.0
        tensors += [
            (f"blk.{i}.attn_norm.weight", norm_weight()),
            (f"blk.{i}.attn_q.weight", normal((n_head * head_dim, n_embd), in_scale)),
            (f"blk.{i}.attn_k.weight", normal((n_head_kv * head_dim, n_embd), in_scale)),
            (f"blk.{i}.attn_v.weight", normal((n_head_kv * head_dim, n_embd), in_scale)),
            (f"blk.{i}.attn_output.weight", attn_out),
            (f"blk.{i}.ffn_norm.weight", norm_weight()),
            (f"blk.{i}.ffn_gate.weight", normal((n_ff, n_embd), in_scale)),
            (f"blk.{i}.ffn_up.weight", normal((n_ff, n_embd), in_scale)),
            (f"blk.{i}.ffn_down.weight", ffn_down),
        ]

    # Trick 1: lm-head row of next[i] ~ embedding of i, along one random cycle.
    suppressed_set = set(suppressed)
    cycle = rng.permutation(np.array([i for i in range(n_vocab) if i not in suppressed_set]))
    output = normal((n_vocab, n_embd), 0.02)
    output[np.roll(cycle, -1)] += head_gain * tok_embd[cycle]
    # Trick 2: channel 0 only carries the (negative) suppression weight.
    output[:, 0] = 0.0
    if suppressed:
        output[suppressed, :] = 0.0
        output[suppressed, 0] = -kill
    tensors += [("output_norm.weight", norm_weight()), ("output.weight", output)]
    return tensors


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    chat_template: str | None = None,
    n_embd: int = 64,
    n_layer: int = 2,
    n_ctx_train: int = 2048,
    n_vocab_extra: int = 1000,
    seed: int = 0,
    suppress_special: bool = True,
    split_max_tensors: int = 0,
    special_tokens: Sequence[str] = (),
    user_tokens: Sequence[str] = (),
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    add_space_prefix: bool | None = None,
) -> pathlib.Path:
    """Write a tiny random llama GGUF model to ``path`` and return the path.

    Args:
        path: Destination file (parent directories are created).
        chat_template: Jinja chat template stored as
            ``tokenizer.chat_template`` (e.g. :data:`CHATML_TEMPLATE`); when
            given, llama-cpp-python uses it for ``create_chat_completion``.
        n_embd: Embedding width (must be a multiple of 4; 4 heads are used).
        n_layer: Number of transformer blocks.
        n_ctx_train: Value of ``llama.context_length``.
        n_vocab_extra: Number of English word pieces added to the vocabulary.
        seed: Seed for ``numpy.random.default_rng``.
        suppress_special: If true (default) the model can never generate
            control tokens (``</s>``, ``<|im_end|>``, ...) or non-whitespace
            byte tokens, so generations only stop at ``max_tokens``/stop
            strings and are always valid ASCII text.
        special_tokens: More control tokens (a chat template's markers such as
            ``<|start_header_id|>``), after the ChatML ones.
        user_tokens: User-defined tokens (shown as text when generated, like
            Qwen3's ``<think>``); not suppressed.
        bos_token, eos_token: Which tokens are BOS and EOS (one of the above).
        add_space_prefix: ``tokenizer.ggml.add_space_prefix`` (None: not written,
            llama.cpp's default: a space before the text, and after each special token).

    Returns:
        ``pathlib.Path(path)``.  Same arguments -> byte-identical file.
    """
    n_head = 4
    n_head_kv = 2  # grouped-query attention, like modern llamas
    if n_embd % (2 * n_head) != 0:
        raise ValueError(f"n_embd must be a multiple of {2 * n_head}, got {n_embd}")
    head_dim = n_embd // n_head
    n_ff = 2 * n_embd

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)

    tokens, scores, types = _build_vocab(n_vocab_extra, special_tokens, user_tokens)
    suppressed = _suppressed_ids(tokens, types) if suppress_special else []
    tensors = _build_tensors(
        np.random.default_rng(seed),
        n_vocab=len(tokens),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        n_layer=n_layer,
        suppressed=suppressed,
    )

    writer = gguf.GGUFWriter(out, "llama", split_max_tensors=split_max_tensors)
    writer.add_name("tiny-test")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(tokens.index(bos_token))
    writer.add_eos_token_id(tokens.index(eos_token))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    for name, data in tensors:
        writer.add_tensor(name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:  # a split GGUF: NAME-00001-of-0000N.gguf ...; the first part is the model
        return sorted(out.parent.glob(f"{out.stem}-00001-of-*.gguf"))[0]
    return out


def write_corrupt_files(dir: str | os.PathLike[str]) -> dict[str, pathlib.Path]:
    """Write invalid model files into ``dir`` and return them by kind.

    * ``"not_gguf"``: ``x.gguf``, a plain text file with a ``.gguf`` suffix.
    * ``"truncated"``: ``truncated.gguf``, a valid tiny model cut to half its
      size (header intact, tensor data missing).

    ``llama_cpp.Llama`` raises ``ValueError`` for both.
    """
    d = pathlib.Path(dir)
    d.mkdir(parents=True, exist_ok=True)

    not_gguf = d / "x.gguf"
    not_gguf.write_text("this is not a GGUF model, just some text\n", encoding="utf-8")

    full = write_tiny_model(d / "_full_for_truncation.gguf")
    data = full.read_bytes()
    full.unlink()
    truncated = d / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])

    return {"not_gguf": not_gguf, "truncated": truncated}
