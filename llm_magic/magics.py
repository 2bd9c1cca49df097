"""``%%ask``, ``%ask`` and ``%llm``: a thin IPython front end over ``llm_magic``'s core."""

from __future__ import annotations

import argparse
import io
import logging
import re
import shlex
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Dict, Float, Int, List, Unicode, Union, observe, validate
from traitlets import TraitError

from . import config, generation
from . import conversation as conversations
from .cache import budget_bytes, get_cache, keep_alive_seconds
from .cell_errors import CellErrors
from .display import StreamDisplay
from .errors import LLMMagicError
from .formats import FORMATS, first_code_block, parse_json_answer
from .images import load_image
from .interpolate import interpolate as interpolate_prompt

log = logging.getLogger("llm_magic")


def _user_error(exc: LLMMagicError) -> UsageError:
    return UsageError(str(exc))


def _split(text: str) -> list[str]:
    """Shell-like split of a %llm argument line; an unbalanced quote is a UsageError."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"%llm: {e} in {text!r}") from None


def _read_grammar(value: str) -> str:
    """``--grammar``: a path to a .gbnf file, or the grammar itself."""
    import os

    if "::=" not in value:
        path = os.path.expanduser(value)
        if not os.path.isfile(path):
            raise UsageError(f"--grammar: no such file {value!r} (pass a .gbnf file or grammar text with '::=')")
        with open(path, encoding="utf-8") as f:
            return f.read()
    return value


def _json_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return JSON_GBNF


EXPLAIN_PROMPT = """This code, run in a Jupyter notebook cell, raised an error.

Code:
```python
{source}
```

Error:
```
{traceback}
```

Explain the cause of the error, then show how to fix it."""


class _AliasParser(argparse.ArgumentParser):
    def error(self, message):  # no SystemExit inside a kernel
        raise ValueError(message)


ALIAS_PARSER = _AliasParser(prog="%llm alias", add_help=False,
                            description="Add a model alias for this session.")
ALIAS_PARSER.add_argument("name")
ALIAS_PARSER.add_argument("path", nargs="?")
ALIAS_PARSER.add_argument("--base-url", dest="base_url")
ALIAS_PARSER.add_argument("--model", dest="model")
ALIAS_PARSER.add_argument("--api-key-env", dest="api_key_env")
ALIAS_PARSER.add_argument("--endpoint", choices=("chat", "completions"))
ALIAS_PARSER.add_argument("--n-ctx", type=int, dest="n_ctx")
ALIAS_PARSER.add_argument("--n-threads", type=int, dest="n_threads")
ALIAS_PARSER.add_argument("--n-batch", type=int, dest="n_batch")
ALIAS_PARSER.add_argument("--chat", choices=("auto", "completion"))
ALIAS_PARSER.add_argument("--no-mlock", action="store_true", dest="no_mlock")

_ASK_LINE = re.compile(r"^(\s*)%ask(\s.*)$")


def ask_line_transformer(lines: list[str]) -> list[str]:
    """Route ``%ask ... ?`` lines to the magic as written.

    IPython reads a line ending in ``?`` as a help request (``%ask What is X?`` would show help
    for ``X``), and almost every question ends in ``?``. This cleanup transform runs before that
    rule and turns each ``%ask`` line into an explicit ``run_line_magic`` call. ``%ask?`` (help)
    and ``%%ask`` cells are left alone.
    """
    if not lines or lines[0].lstrip().startswith("%%"):
        return lines
    out = []
    for line in lines:
        match = _ASK_LINE.match(line.rstrip("\n"))
        if match and match.group(2).strip():
            indent, rest = match.group(1), match.group(2).strip()
            out.append(f"{indent}get_ipython().run_line_magic('ask', {rest!r})\n")
        else:
            out.append(line)
    return out


def split_options(line: str, value_options: set[str], flag_options: set[str]) -> tuple[str, str]:
    """Split ``line`` into its leading options and the free-text prompt after them.

    The prompt is everything from the first word that is not an option, kept exactly as typed
    (apostrophes and quotes included: it is never shell-split). ``--`` ends the options.
    """
    stream = io.StringIO(line)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    expect_value = False
    while True:
        start = stream.tell()
        try:
            token = lexer.get_token()
        except ValueError:  # an unbalanced quote: the prompt starts here
            return line[:start], line[start:].strip()
        if token is None or token == lexer.eof:
            return line, ""
        if expect_value:
            expect_value = False
            continue
        if token == "--":
            return line[:start], line[stream.tell():].strip()
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            name = token.split("=", 1)[0]
            if name in value_options:
                expect_value = "=" not in token
                continue
            if name in flag_options:
                continue
            raise UsageError(f"unknown option {name}; see %%ask? for the options")
        return line[:start], line[start:].strip()


@magics_class
class AskMagics(Magics):
    """Ask a local language model from a notebook cell."""

    model = Unicode("", help="Default model: an alias from `models` or a GGUF path. "
                              "Falls back to $LLM_MAGIC_MODEL, then the default-model extra.").tag(config=True)
    preload = List(Unicode(), default_value=None, allow_none=True,
                   help="Models to load in the background on %load_ext (default: the default model).").tag(config=True)
    timeout = Float(120.0, help="Seconds per ask, counted from the start of the cell (load wait included).").tag(config=True)
    max_tokens = Int(512, help="Most tokens generated per answer.").tag(config=True)
    n_ctx = Int(4096, help="Context window (capped at the model's trained length).").tag(config=True)
    n_threads = Int(0, help="Threads for llama.cpp; 0 = all physical cores.").tag(config=True)
    use_mlock = Bool(True, help="Lock model pages in RAM (falls back to off if the OS refuses).").tag(config=True)
    temperature = Float(0.7, help="Default sampling temperature (0 = greedy).").tag(config=True)
    top_p = Float(0.95, help="Default nucleus sampling threshold, in (0, 1].").tag(config=True)
    top_k = Int(40, help="Default top-k sampling (0 = off).").tag(config=True)
    repeat_penalty = Float(1.0, help="Default repetition penalty (1.0 = off).").tag(config=True)
    seed = Int(-1, help="Default sampling seed; -1 = random.").tag(config=True)
    system = Unicode("", help="Default system prompt.").tag(config=True)
    stop = List(Unicode(), help="Default stop strings.").tag(config=True)
    models = Dict(help="Aliases: {'name': {'path': ..., 'n_ctx': ..., ...}}.").tag(config=True)
    max_loaded_models = Int(0, help="Most models loaded at once (0 = no limit); loading one more evicts "
                                    "the least recently used idle model.").tag(config=True)
    memory_budget = Union([Int(), Unicode()], default_value=0,
                          help="Most bytes of model files loaded at once: bytes, '8GB', or '50%' of RAM "
                               "(0 = no limit). Least recently used idle models are evicted.").tag(config=True)
    keep_alive = Union([Float(), Unicode()], default_value="forever",
                       help="Unload a model idle for this many seconds ('forever' = never).").tag(config=True)
    vision_model = Unicode("", help="The model `%%ask --image` uses when no -m is given "
                                    "(an alias with 'path' and 'mmproj').").tag(config=True)
    json_grammar = Unicode("", help="GBNF grammar that constrains `-f json` answers "
                                    "(default: llama.cpp's JSON grammar).").tag(config=True)

    _synced = ("model", "preload", "timeout", "max_tokens", "n_ctx", "n_threads", "use_mlock",
               "temperature", "top_p", "top_k", "repeat_penalty", "seed", "system", "stop", "models",
               "max_loaded_models", "memory_budget", "keep_alive", "vision_model")

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        for name in self._synced:
            setattr(config.settings, name, getattr(self, name))
        self.cell_errors = CellErrors()
        self.session_aliases: dict[str, dict] = {}

    @observe(*_synced)
    def _sync(self, change):
        value = change["new"]
        if change["name"] == "models":
            value = {**value, **self.session_aliases}
        setattr(config.settings, change["name"], value)

    @validate("timeout")
    def _check_timeout(self, proposal):
        if not proposal["value"] > 0:
            raise TraitError("AskMagics.timeout must be > 0 seconds")
        return proposal["value"]

    @validate("max_tokens", "n_ctx")
    def _check_positive(self, proposal):
        if proposal["value"] <= 0:
            raise TraitError(f"AskMagics.{proposal['trait'].name} must be > 0")
        return proposal["value"]

    @validate("temperature", "top_p", "top_k", "repeat_penalty")
    def _check_sampling(self, proposal):
        try:
            generation.validate_options(None, None, {proposal["trait"].name: proposal["value"]})
        except LLMMagicError as e:
            raise TraitError(f"AskMagics.{e}") from None
        return proposal["value"]

    @validate("max_loaded_models")
    def _check_max_models(self, proposal):
        if proposal["value"] < 0:
            raise TraitError("AskMagics.max_loaded_models must be >= 0 (0 = no limit)")
        return proposal["value"]

    @validate("memory_budget")
    def _check_budget(self, proposal):
        try:
            if budget_bytes(proposal["value"]) < 0:
                raise ValueError
        except (ValueError, TypeError):
            raise TraitError(f"AskMagics.memory_budget must be bytes, '8GB' or '50%', got {proposal['value']!r}") from None
        return proposal["value"]

    @validate("keep_alive")
    def _check_keep_alive(self, proposal):
        try:
            keep_alive_seconds(proposal["value"])
        except (ValueError, TypeError):
            raise TraitError(f"AskMagics.keep_alive must be seconds or 'forever', got {proposal['value']!r}") from None
        return proposal["value"]

    @validate("models")
    def _check_models(self, proposal):
        for name, spec in proposal["value"].items():
            if not isinstance(spec, dict):
                raise TraitError(f"AskMagics.models[{name!r}] must be a dict with a 'path'")
            try:
                config.validate_alias(name, spec)
            except LLMMagicError as e:
                raise TraitError(str(e)) from None
        return proposal["value"]

    # ---- %%ask / %ask ----------------------------------------------------------------------

    @magic_arguments()
    @argument("-m", "--model", help="Alias from AskMagics.models or a path to a GGUF file.")
    @argument("-t", "--timeout", type=float, help="Seconds for the whole ask (load wait included); "
              "on timeout the partial answer is kept and marked.")
    @argument("-n", "--max-tokens", type=int, dest="max_tokens", help="Most tokens to generate.")
    @argument("-f", "--format", choices=FORMATS, default="markdown",
              help="markdown (default), text, code (first fenced block becomes the next cell, never run), "
                   "json (parsed; -o stores the object).")
    @argument("-o", "--output", metavar="VAR", help="Store the Answer (with -f json: the parsed object) in VAR.")
    @argument("-c", "--conversation", metavar="NAME", help="Continue conversation NAME (kept per model).")
    @argument("--chat", action="store_true", help="Continue the default conversation.")
    @argument("--system", metavar="TEXT", help="System prompt for this ask.")
    @argument("--temperature", type=float, help="Sampling temperature (0 = greedy).")
    @argument("--top-p", type=float, dest="top_p", help="Nucleus sampling threshold, in (0, 1].")
    @argument("--top-k", type=int, dest="top_k", help="Top-k sampling (0 = off).")
    @argument("--repeat-penalty", type=float, dest="repeat_penalty", help="Repetition penalty (1.0 = off).")
    @argument("--seed", type=int, help="Sampling seed, for repeatable answers.")
    @argument("--stop", action="append", metavar="TEXT", help="Stop at this text (repeatable).")
    @argument("--image", action="append", metavar="IMAGE", help="An image for a vision model (repeatable): a "
              "file path, or a variable holding a PIL image, numpy array, PNG/JPEG bytes or matplotlib figure.")
    @argument("--grammar", metavar="GBNF", help="Constrain the answer with a llama.cpp GBNF grammar "
              "(a .gbnf file or the grammar text); -f json uses a JSON grammar by default.")
    @argument("--raw", action="store_true", help="Send the text as it is, without a chat or Q/A prompt.")
    @argument("--no-interpolate", action="store_true", dest="no_interpolate",
              help="Send {braces} unchanged (by default {name}, {In[n]}, {Out[n]}, {Err[n]} are filled in).")
    @line_cell_magic
    def ask(self, line: str, cell: str | None = None):
        """Ask a language model; the answer streams into the output.

        %%ask [options]
        <prompt: the cell body; {name}, {In[n]}, {Out[n]}, {Err[n]} are filled in>

        %ask [options] <prompt on one line>

        The result is an Answer (a str with finish_reason, n_tokens, ttft_s, total_s,
        tokens_per_s, ...); store it with -o VAR or get it with llm_magic.last_answer().
        """
        args, words = self._parse(self.ask, line)
        prompt = "\n".join(p for p in (words, cell or "") if p.strip())
        if not args.raw:
            prompt = prompt.rstrip("\n")  # the cell's final newline is not part of the question
        return self._ask(args, prompt)

    def _parse(self, magic, line: str):
        parser = magic.parser
        value_opts, flag_opts = set(), set()
        for action in parser._actions:
            (value_opts if action.nargs != 0 else flag_opts).update(action.option_strings)
        options, words = split_options(line, value_opts, flag_opts)
        try:
            args = magic.parser.parse_args(shlex.split(options))  # quotes removed: --system "Be brief."
        except UsageError:
            raise
        except Exception as e:  # argparse / shlex errors
            raise UsageError(f"%ask: {e}") from None
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, got {args.output!r}")
        if args.conversation and args.chat:
            raise UsageError("use either -c NAME or --chat (the default conversation), not both")
        return args, words

    def _ask(self, args, prompt: str, interpolate: bool = True):
        if interpolate and not args.no_interpolate:
            prompt = interpolate_prompt(prompt, user_ns=self.shell.user_ns, errors=self.cell_errors.tracebacks(),
                                        warn=log.warning)
        grammar = _read_grammar(args.grammar) if args.grammar else None
        if args.format == "json" and grammar is None:
            grammar = self.json_grammar or _json_grammar()
        conversation = args.conversation or (conversations.DEFAULT if args.chat else None)
        images = None
        if args.image:
            try:
                images = [load_image(x, user_ns=self.shell.user_ns) for x in args.image]
            except LLMMagicError as e:
                raise _user_error(e) from None
            for image in images:
                if image.note:
                    log.warning("llm_magic: %s", image.note)
        answer = self.run_ask(prompt, model=args.model, timeout=args.timeout, max_tokens=args.max_tokens,
                              raw=args.raw, system=args.system, conversation=conversation,
                              temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              repeat_penalty=args.repeat_penalty, seed=args.seed, stop=args.stop,
                              grammar=grammar, format=args.format, images=images)
        result = answer
        if args.format == "code":
            code = first_code_block(answer)
            self.shell.set_next_input(code if code is not None else answer.text.strip(), replace=False)
        elif args.format == "json":
            try:
                result = parse_json_answer(answer)
            except LLMMagicError as e:
                raise _user_error(e) from None
        if args.output:
            self.shell.user_ns[args.output] = result
        return None

    def run_ask(self, prompt: str, format: str = "markdown", **options) -> generation.Answer:
        """Stream one answer into the cell output and return it."""
        try:
            # a kernel shutdown or restart request (handled on ipykernel's control thread) sets
            # shell.exit_now: stop at the next token so the kernel exits at once
            stream = generation.Stream(prompt, cancel_if=lambda: getattr(self.shell, "exit_now", False), **options)
        except LLMMagicError as e:
            raise _user_error(e) from None
        view = StreamDisplay(markdown=format == "markdown")
        stream.on_status = view.status
        stream.defer_log = True  # the timeout log line goes under the answer, not into it
        view.start()
        try:
            answer = stream.consume(on_chunk=view.add)
        except BaseException as e:
            view.finish(marker=f"⚠ {e}" if not isinstance(e, LLMMagicError) else None, final_text=view.text)
            if isinstance(e, LLMMagicError) and e.user_error:
                raise _user_error(e) from None
            raise
        view.finish(marker=answer.marker())
        stream.log_timeout()
        return answer

    # ---- %llm ------------------------------------------------------------------------------

    @line_magic
    def llm(self, line: str):
        """Manage models and conversations: %llm help lists the subcommands."""
        words = line.split(maxsplit=1)
        if not words:
            raise UsageError("%llm needs a subcommand: status, load, unload, help")
        command, rest = words[0], (words[1] if len(words) > 1 else "")
        handler = getattr(self, f"_llm_{command}", None)
        if handler is None:
            raise UsageError(f"%llm: unknown subcommand {command!r}; try %llm help")
        try:
            return handler(rest)
        except LLMMagicError as e:
            raise _user_error(e) from None

    SUBCOMMANDS = (
        ("status", "models in the cache: state, size, load time, uses, last use, mlock, error"),
        ("load NAME [--wait]", "start loading a model in the background (--wait: until it is ready)"),
        ("unload NAME | --all", "close one model, or every model, and free the memory"),
        ("alias NAME PATH [--n-ctx N ...]", "add a model alias for this session (see %llm alias --help)"),
        ("aliases", "list the model aliases"),
        ("explain [ask options]", "ask the model for the cause and a fix of the last error"),
        ("history [NAME]", "show a conversation (all of them without NAME)"),
        ("reset [NAME]", "forget a conversation (all of them without NAME)"),
        ("panel", "an interactive ask panel (the kernel stays free while it streams)"),
        ("help", "this list"),
    )

    def _llm_help(self, rest: str) -> None:
        width = max(len(c) for c, _ in self.SUBCOMMANDS) + 6
        print("\n".join(f"{'%llm ' + c:<{width}} {d}" for c, d in self.SUBCOMMANDS))

    def _llm_explain(self, rest: str) -> None:
        last = self.cell_errors.last()
        if last is None:
            raise UsageError("no error to explain yet: %llm explain looks at the last cell that raised")
        args, words = self._parse(self.ask, rest)
        prompt = EXPLAIN_PROMPT.format(source=last.source.strip(), traceback=last.traceback)
        if words:
            prompt += f"\n\n{words}"
        self._ask(args, prompt, interpolate=False)

    def _llm_reset(self, rest: str) -> None:
        words = _split(rest)
        if len(words) > 1:
            raise UsageError("usage: %llm reset [NAME]")
        n = conversations.reset(words[0] if words else None)
        what = f"conversation {words[0]!r}" if words else "all conversations"
        print(f"forgot {what} ({n} on {n} model{'s' if n != 1 else ''})" if n else f"no {what} to forget")

    def _llm_history(self, rest: str) -> None:
        words = _split(rest)
        if len(words) > 1:
            raise UsageError("usage: %llm history [NAME]")
        found = conversations.find(words[0] if words else None)
        if not found:
            print(f"no conversation {words[0]!r} yet" if words else "no conversations yet (%%ask -c NAME or --chat)")
            return
        for conv in found:
            trimmed = f", {conv.trimmed} older trimmed to fit the context" if conv.trimmed else ""
            print(f"conversation {conv.name!r} on {conv.model_name}: {len(conv.turns)} turn"
                  f"{'s' if len(conv.turns) != 1 else ''}{trimmed}")
            if conv.system:
                print(f"  system: {conv.system}")
            for i, turn in enumerate(conv.turns, 1):
                mark = "" if turn.finish_reason in ("stop", "length") else f" [{turn.finish_reason}]"
                print(f"  [{i}] user: {turn.user.strip()}")
                print(f"      assistant{mark}: {turn.answer.strip()}")

    def _llm_alias(self, rest: str) -> None:
        try:
            args = ALIAS_PARSER.parse_args(_split(rest))
        except ValueError as e:
            raise UsageError(f"%llm alias: {e}") from None
        spec = {"path": args.path} if args.path else {}
        for key in ("n_ctx", "n_threads", "n_batch", "chat", "base_url", "model", "api_key_env", "endpoint"):
            if getattr(args, key) is not None:
                spec[key] = getattr(args, key)
        if args.no_mlock:
            spec["use_mlock"] = False
        try:
            config.validate_alias(args.name, spec)
            if "path" in spec:
                config.resolve_spec_path(spec["path"])
        except LLMMagicError as e:
            raise UsageError(str(e)) from None
        self.session_aliases[args.name] = spec
        config.settings.models = {**self.models, **self.session_aliases}
        target = spec.get("path") or spec.get("base_url")
        print(f"alias {args.name} -> {target}" + "".join(f" {k}={v}" for k, v in spec.items()
                                                      if k not in ("path", "base_url")))

    def _llm_aliases(self, rest: str) -> None:
        aliases = config.settings.models
        if not aliases:
            print("no aliases (set AskMagics.models, or %llm alias NAME PATH)")
            return
        width = max(len(n) for n in aliases)
        for name, spec in sorted(aliases.items()):
            source = "session" if name in self.session_aliases else "config"
            target = spec.get("path") or spec.get("base_url")
            options = " ".join(f"{k}={v}" for k, v in spec.items() if k not in ("path", "base_url"))
            print(f"{name:<{width}}  {target}  {options}  ({source})".rstrip())

    def _llm_status(self, rest: str) -> None:
        from . import status_table

        print(status_table())

    def _llm_load(self, rest: str) -> None:
        from . import preload

        words = _split(rest)
        wait = "--wait" in words
        names = [w for w in words if w != "--wait"]
        unknown = [w for w in names if w.startswith("-")]
        if unknown or not names:
            raise UsageError("usage: %llm load NAME [NAME ...] [--wait]")
        entries = preload(*names)
        if wait:
            started = time.monotonic()
            for entry in entries:
                try:
                    get_cache().get(entry.spec)
                except LLMMagicError as e:
                    raise UsageError(str(e)) from None
            print(f"ready in {time.monotonic() - started:.2f} s: {', '.join(e.name for e in entries)}")
        else:
            print(f"loading in the background: {', '.join(e.name for e in entries)}")

    def _llm_panel(self, rest: str):
        from . import panel

        if rest.strip():
            raise UsageError("usage: %llm panel   (set defaults with llm_magic.panel(model=..., max_tokens=...))")
        panel()

    def _llm_unload(self, rest: str) -> None:
        from . import unload

        words = _split(rest)
        if words == ["--all"]:
            n = unload(all=True)
        elif len(words) == 1 and not words[0].startswith("-"):
            n = unload(words[0])
        else:
            raise UsageError("usage: %llm unload NAME | %llm unload --all")
        print(f"unloaded {n} model{'s' if n != 1 else ''}")
