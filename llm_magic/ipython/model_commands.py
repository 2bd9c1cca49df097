"""``%llm`` commands about models: status, load, unload, alias, aliases."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser

from .. import model_sources, runtime
from ..errors import LLMMagicError
from ..settings import check_alias
from ..specs import resolve, resolve_spec_path
from .command_table import command, usage_error
from .download_view import wait_for_download
from .parsing import options_text, split_words

if TYPE_CHECKING:
    from .magics import AskMagics


def _alias_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(prog="%llm alias", add_help=False, description="Add a model alias for this session.")
    parser.add_argument("name")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--base-url", dest="base_url")
    parser.add_argument("--model", dest="model")
    parser.add_argument("--api-key-env", dest="api_key_env")
    parser.add_argument("--endpoint", choices=("chat", "completions"))
    parser.add_argument("--n-ctx", type=int, dest="n_ctx")
    parser.add_argument("--n-threads", type=int, dest="n_threads")
    parser.add_argument("--n-batch", type=int, dest="n_batch")
    parser.add_argument("--chat", choices=("auto", "completion"))
    parser.add_argument("--no-mlock", action="store_true", dest="no_mlock")
    # llama.cpp load options (checked, with the valid values named, by check_alias)
    parser.add_argument("--flash-attn", dest="flash_attn")
    parser.add_argument("--type-k", dest="type_k")
    parser.add_argument("--type-v", dest="type_v")
    parser.add_argument("--n-gpu-layers", type=int, dest="n_gpu_layers")
    parser.add_argument("--main-gpu", type=int, dest="main_gpu")
    parser.add_argument("--split-mode", dest="split_mode")
    parser.add_argument("--tensor-split", type=_proportions, dest="tensor_split", metavar="P,P,...")
    parser.add_argument("--no-offload-kqv", action="store_true", dest="no_offload_kqv")
    return parser


def _proportions(text: str) -> list[float]:
    """``--tensor-split 3,1``: one proportion per GPU."""
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--tensor-split takes proportions per GPU like 3,1, got {text!r}") from None


ALIAS_KEYS = (
    "n_ctx",
    "n_threads",
    "n_batch",
    "chat",
    "base_url",
    "model",
    "api_key_env",
    "endpoint",
    "flash_attn",
    "type_k",
    "type_v",
    "n_gpu_layers",
    "main_gpu",
    "split_mode",
    "tensor_split",
)


ALIAS_PARSER = _alias_parser()


@command(
    "status", "models in the cache: options, state, size, load time, uses, last use, device, mlock, kv cache, error"
)
def status(magics: AskMagics, rest: str) -> None:
    from .. import status_table

    print(status_table())


@command("load NAME [NAME ...] [--wait]", "start loading a model in the background (--wait: until it is ready)")
def load(magics: AskMagics, rest: str) -> None:
    from .. import preload

    words = split_words(rest)
    wait = "--wait" in words
    names = [w for w in words if w != "--wait"]
    if not names or any(w.startswith("-") for w in names):
        raise usage_error("load")
    entries = preload(*names)
    if not wait:
        print(f"loading in the background: {', '.join(e.name for e in entries)}")
        return
    started = time.monotonic()
    for entry in entries:
        wait_for_download(entry.spec, magics.shell)  # an hf: model not downloaded yet: its progress bar
        runtime.get().cache.get(entry.spec)
    print(f"ready in {time.monotonic() - started:.2f} s: {', '.join(e.name for e in entries)}")


@command("unload NAME | --all", "close one model, or every model, and free the memory")
def unload(magics: AskMagics, rest: str) -> None:
    from .. import unload as unload_models

    words = split_words(rest)
    if words == ["--all"]:
        n = unload_models(all=True)
    elif len(words) == 1 and not words[0].startswith("-"):
        n = unload_models(words[0])
    else:
        raise usage_error("unload")
    print(f"unloaded {n} model{'s' if n != 1 else ''}")


@command(
    "alias NAME PATH [--n-ctx N --n-gpu-layers N --flash-attn on ...]",
    "add a model alias for this session (PATH or --base-url URL)",
)
def alias(magics: AskMagics, rest: str) -> None:
    args = ALIAS_PARSER.parse_args(split_words(rest, "%llm alias"))
    spec: dict[str, object] = {"path": args.path} if args.path else {}
    for key in ALIAS_KEYS:
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.no_mlock:
        spec["use_mlock"] = False
    if args.no_offload_kqv:
        spec["offload_kqv"] = False
    try:
        check_alias(args.name, spec)
        if isinstance(spec.get("path"), str) and not model_sources.is_source(str(spec["path"])):
            resolve_spec_path(str(spec["path"]))
    except LLMMagicError as e:
        raise UsageError(str(e)) from None
    previous = magics.session_aliases.get(args.name)
    magics.add_alias(args.name, spec)
    try:  # the whole spec, with the settings' defaults: e.g. type_v=q8_0 while flash_attn is 'off'
        resolve(args.name)  # (and GPU layers asked for on a build without a GPU: said once, now)
    except LLMMagicError as e:
        if previous is None:
            del magics.session_aliases[args.name]
        else:
            magics.session_aliases[args.name] = previous
        raise UsageError(str(e)) from None
    target = spec.get("path") or spec.get("base_url")
    print(f"alias {args.name} -> {target} {options_text(spec)}".rstrip())


@command("aliases", "list the model aliases")
def aliases(magics: AskMagics, rest: str) -> None:
    known = magics.aliases()
    if not known:
        print("no aliases (set AskMagics.models, or %llm alias NAME PATH)")
        return
    width = max(len(n) for n in known)
    for name, spec in sorted(known.items()):
        source = "session" if name in magics.session_aliases else "config"
        target = spec.get("path") or spec.get("base_url")
        print(f"{name:<{width}}  {target}  {options_text(spec)}  ({source})".rstrip())


@command(
    "models",
    "GGUF models on this machine (model_dirs, Hugging Face cache, Ollama, LM Studio, llama.cpp cache): "
    "name for -m, size, architecture, quantization, context, chat template, memory estimate",
)
def models(magics: AskMagics, rest: str) -> None:
    from ..model_finder import find_models
    from .models_table import models_table

    if rest.strip():
        raise usage_error("models")
    print(models_table(find_models()))
