"""``%%ask``, ``%ask`` and ``%llm``: a thin IPython front end over ``llm_magic``'s core."""

from __future__ import annotations

import io
import logging
import re
import shlex
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Dict, Float, Int, List, Unicode, observe, validate
from traitlets import TraitError

from . import config, generation
from .cache import get_cache
from .display import StreamDisplay
from .errors import LLMMagicError

log = logging.getLogger("llm_magic")


def _user_error(exc: LLMMagicError) -> UsageError:
    return UsageError(str(exc))


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
    temperature = Float(0.7, help="Default sampling temperature.").tag(config=True)
    seed = Int(-1, help="Default sampling seed; -1 = random.").tag(config=True)
    models = Dict(help="Aliases: {'name': {'path': ..., 'n_ctx': ..., ...}}.").tag(config=True)

    _synced = ("model", "preload", "timeout", "max_tokens", "n_ctx", "n_threads", "use_mlock",
               "temperature", "seed", "models")

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        for name in self._synced:
            setattr(config.settings, name, getattr(self, name))

    @observe(*_synced)
    def _sync(self, change):
        setattr(config.settings, change["name"], change["new"])

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
    @argument("--temperature", type=float, help="Sampling temperature (0 = greedy).")
    @argument("--seed", type=int, help="Sampling seed, for repeatable answers.")
    @argument("-o", "--output", metavar="VAR", help="Store the Answer in this variable.")
    @argument("--raw", action="store_true", help="Send the text as it is, without a chat or Q/A prompt.")
    @line_cell_magic
    def ask(self, line: str, cell: str | None = None):
        """Ask a language model; the answer streams into the output.

        %%ask [-m MODEL] [-t TIMEOUT] [-n MAX_TOKENS] [--temperature T] [--seed S] [-o VAR] [--raw]
        <prompt: the cell body>

        %ask [options] <prompt on one line>

        The result is an Answer (a str with finish_reason, n_tokens, ttft_s, total_s,
        tokens_per_s, ...); store it with -o VAR or get it with llm_magic.last_answer().
        """
        parser = self.ask.parser
        value_opts, flag_opts = set(), set()
        for action in parser._actions:
            (value_opts if action.nargs != 0 else flag_opts).update(action.option_strings)
        options, words = split_options(line, value_opts, flag_opts)
        try:
            args = parse_argstring(self.ask, options)
        except UsageError:
            raise
        except Exception as e:  # argparse / shlex errors
            raise UsageError(f"%ask: {e}") from None
        prompt = "\n".join(p for p in (words, cell or "") if p.strip())
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, got {args.output!r}")
        answer = self.run_ask(prompt, model=args.model, timeout=args.timeout, max_tokens=args.max_tokens,
                              raw=args.raw, temperature=args.temperature, seed=args.seed)
        if args.output:
            self.shell.user_ns[args.output] = answer
        return None

    def run_ask(self, prompt: str, **options) -> generation.Answer:
        """Stream one answer into the cell output and return it."""
        try:
            stream = generation.Stream(prompt, **options)
        except LLMMagicError as e:
            raise _user_error(e) from None
        view = StreamDisplay()
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
        """Manage models: %llm status | load NAME [--wait] | unload NAME | unload --all | help"""
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

    def _llm_help(self, rest: str) -> None:
        print("%llm status               models in the cache: state, size, load time, uses, last use, error\n"
              "%llm load NAME [--wait]   start loading a model in the background (--wait: until ready)\n"
              "%llm unload NAME          close a model and free its memory\n"
              "%llm unload --all         close every model\n"
              "%llm panel                an interactive ask panel (the kernel stays free while it streams)\n"
              "%llm help                 this list")

    def _llm_status(self, rest: str) -> None:
        from . import status_table

        print(status_table())

    def _llm_load(self, rest: str) -> None:
        from . import preload

        words = shlex.split(rest)
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

        words = shlex.split(rest)
        if words == ["--all"]:
            n = unload(all=True)
        elif len(words) == 1 and not words[0].startswith("-"):
            n = unload(words[0])
        else:
            raise UsageError("usage: %llm unload NAME | %llm unload --all")
        print(f"unloaded {n} model{'s' if n != 1 else ''}")
