"""``%%ask``, ``%ask`` and ``%llm``: a thin IPython front end over ``llm_magic``'s core.

``AskMagics`` is also the settings object (it subclasses ``settings.Settings``): ``%config
AskMagics.x`` and ``ipython_config.py`` set the very traits every request reads while the
extension is loaded. Both magics take their line verbatim (``no_var_expand``): only llm_magic's
own ``{name}``/``{In[n]}`` interpolation applies, never IPython's ``$x``/``{expr}`` expansion.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .. import answer_record, runtime
from .. import conversation as conversations
from ..answer import Answer
from ..errors import LLMMagicError
from ..images import load_image
from ..request import Stream
from ..settings import Settings
from . import ask_context, log_commands, model_commands, session_commands
from .cell_errors import CellErrors
from .cell_output import StreamDisplay
from .command_table import dispatch
from .download_view import download_first
from .formats import FORMATS, NO_CODE_BLOCK, code_for_next_cell, parse_json_answer
from .interpolate import interpolate as interpolate_prompt
from .parsing import json_grammar, parse_ask_line, read_grammar

log = logging.getLogger("llm_magic")

# %%ask flags handed to the request as they are (the others are read here first)
ASK_OPTIONS = (
    "model",
    "timeout",
    "max_tokens",
    "raw",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "draft",
    "format",
    "think",
)
COMMAND_MODULES = (model_commands, session_commands, log_commands)  # importing them fills the %llm table


def _failure_marker(error: BaseException, text: str) -> str | None:
    """The line under what was shown when an ask fails (its error follows in the cell): a failure
    of ours with nothing shown says there is no answer (not "empty answer")."""
    if isinstance(error, LLMMagicError):
        return None if text else "no answer"
    return f"error — {type(error).__name__}: {error}".removesuffix(": ")


@magics_class
class AskMagics(Magics, Settings):
    """Ask a local language model from a notebook cell."""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.cell_errors = CellErrors()

    @property
    def ip(self) -> InteractiveShell:
        """The shell these magics are registered with."""
        assert self.shell is not None, "AskMagics needs a shell"
        return self.shell

    # ---- %%ask / %ask ----------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "-m",
        "--model",
        help="Alias from AskMagics.models, a path to a GGUF file, hf:ORG/REPO:QUANT or ollama:NAME[:TAG] (Tab completes).",
    )
    @argument(
        "-t",
        "--timeout",
        type=float,
        help="Seconds for the whole ask (load wait included); on timeout the partial answer is kept and marked.",
    )
    @argument("-n", "--max-tokens", type=int, dest="max_tokens", help="Most tokens to generate.")
    @argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown (default), text, code (the first fenced block, or a bare Python answer, becomes the next "
        "cell, never run; none: a note says so), json (parsed; -o stores the object).",
    )
    @argument("-o", "--output", metavar="VAR", help="Store the Answer (with -f json: the parsed object) in VAR.")
    @argument("-c", "--conversation", metavar="NAME", help="Continue conversation NAME (kept per model).")
    @argument("--chat", action="store_true", help="Continue the default conversation.")
    @argument("--system", metavar="TEXT", help="System prompt for this ask.")
    @argument("--temperature", type=float, help="Sampling temperature (0 = greedy).")
    @argument("--top-p", type=float, dest="top_p", help="Nucleus sampling threshold, in (0, 1].")
    @argument("--top-k", type=int, dest="top_k", help="Top-k sampling (0 = off).")
    @argument("--repeat-penalty", type=float, dest="repeat_penalty", help="Repetition penalty (1.0 = off).")
    @argument(
        "--frequency-penalty",
        type=float,
        dest="frequency_penalty",
        help="Lower a token's odds by how often it already appeared (0 = off).",
    )
    @argument(
        "--presence-penalty",
        type=float,
        dest="presence_penalty",
        help="Lower the odds of any token that already appeared (0 = off).",
    )
    @argument("--seed", type=int, help="Sampling seed, for repeatable answers.")
    @argument(
        "--draft",
        choices=("lookup", "none"),
        help="lookup: guess the next tokens from the prompt and answer so far and check them in one batch "
        "(greedy answers that copy from the prompt, e.g. edits of code, come faster; the text is the same).",
    )
    @argument("--stop", action="append", metavar="TEXT", help="Stop at this text (repeatable).")
    @argument(
        "--image",
        action="append",
        metavar="IMAGE",
        help="An image for a vision model (repeatable): a "
        "file path, or a variable holding a PIL image, numpy array, PNG/JPEG bytes or matplotlib figure.",
    )
    @argument(
        "--grammar",
        metavar="GBNF",
        help="Constrain the answer with a llama.cpp GBNF grammar "
        "(a .gbnf file or the grammar text); -f json uses a JSON grammar by default.",
    )
    @argument(
        "--think",
        action="store_true",
        default=None,
        help="Reasoning models: let the model think first, where its chat template can switch it "
        "(the thinking streams subdued, then folds away; Answer.thinking keeps it).",
    )
    @argument(
        "--no-think",
        action="store_false",
        dest="think",
        help="Reasoning models: answer without thinking, where the chat template can switch it off.",
    )
    @argument("--raw", action="store_true", help="Send the text as it is, without a chat or Q/A prompt.")
    @argument(
        "--cells",
        type=int,
        metavar="N",
        help="Add the last N executed cells (source, short results and errors) within AskMagics.context_budget.",
    )
    @argument(
        "--cache",
        action="store_true",
        help="Answer an identical earlier request (same model file, options, seed, final prompt) from the ask log "
        "at once, marked as replayed (AskMagics.cache = True does it for every ask).",
    )
    @argument("--fresh", action="store_true", help="Ask the model even when AskMagics.cache is on.")
    @argument(
        "--no-interpolate",
        action="store_true",
        dest="no_interpolate",
        help="Send {braces} unchanged (by default {name}, {In[n]}, {Out[n]}, {Err[n]} are filled in; a large value "
        "is summarised within AskMagics.context_budget tokens, {name!full} sends it whole).",
    )
    @no_var_expand
    @line_cell_magic
    def ask(self, line: str, cell: str | None = None):
        """Ask a language model; the answer streams into the output.

        %%ask [options]
        <prompt: the cell body; {name}, {In[n]}, {Out[n]}, {Err[n]} are filled in
         (a large value summarised within AskMagics.context_budget tokens; {name!full}: whole)>

        %ask [options] <prompt on one line>

        The result is an Answer (a str with finish_reason, n_tokens, ttft_s, total_s,
        tokens_per_s, ...); store it with -o VAR or get it with llm_magic.last_answer().
        """
        args, words = parse_ask_line(self.ask.parser, line)
        prompt = "\n".join(p for p in (words, cell or "") if p.strip())
        if not args.raw:
            prompt = prompt.rstrip("\n")  # the cell's final newline is not part of the question
        return self.ask_with(args, prompt)

    def ask_with(self, args: argparse.Namespace, prompt: str, interpolate: bool = True) -> None:
        """Run one ask from parsed options: interpolate, stream into the cell, apply the format."""
        notes: list[str] = []
        if args.cells is not None and args.cells < 1:
            raise UsageError(f"--cells needs a positive number of cells, got {args.cells}")
        if (interpolate and not args.no_interpolate) or args.cells:
            summarize, count = ask_context.summarizer(self.context_budget, args.model)
            if interpolate and not args.no_interpolate:
                prompt = interpolate_prompt(
                    prompt,
                    user_ns=self.ip.user_ns,
                    errors=self.cell_errors.tracebacks(),
                    warn=log.warning,
                    summarize=summarize,
                    notes=notes,
                )
            if args.cells:
                errors = self.cell_errors.tracebacks()
                prompt = ask_context.add_cells(self.ip, errors, prompt, args.cells, self.context_budget, count, notes)
        grammar = read_grammar(args.grammar) if args.grammar else None
        if args.format == "json" and grammar is None:
            grammar = self.json_grammar or json_grammar()
        conversation = args.conversation or (conversations.DEFAULT if args.chat else None)
        images = None
        if args.image:
            try:
                images = [load_image(x, user_ns=self.ip.user_ns) for x in args.image]
            except LLMMagicError as e:
                raise UsageError(str(e)) from None
            for image in images:
                if image.note:
                    log.warning("llm_magic: %s", image.note)
        passed = {name: getattr(args, name) for name in ASK_OPTIONS}
        replay = (args.cache or self.cache) and not args.fresh
        note = ask_context.notes_line(notes, self.context_budget)
        answer = self.run_ask(
            prompt, conversation=conversation, grammar=grammar, images=images, replay=replay, note=note, **passed
        )
        result: Any = answer
        if args.format == "code":
            if answer.value is not None:  # run_ask found the code (or said there is none)
                self.ip.set_next_input(answer.value, replace=False)
        elif args.format == "json":
            try:
                result = parse_json_answer(answer)
            except LLMMagicError as e:
                raise UsageError(str(e)) from None
        if args.output:
            self.ip.user_ns[args.output] = result

    def run_ask(
        self, prompt: str, format: str = "markdown", replay: bool = False, note: str | None = None, **options: Any
    ) -> Answer:
        """Stream one answer into the cell output and return it (``replay``: from the ask log when
        an identical request is there; ``note``: a line under the answer)."""
        download_first(options.get("model"), self.shell)  # an hf: model not in the cache: its progress bar
        try:
            # a kernel shutdown or restart request (handled on ipykernel's control thread) sets
            # shell.exit_now: stop at the next token so the kernel exits at once
            stream = Stream(prompt, cancel_if=lambda: getattr(self.shell, "exit_now", False), **options)
        except LLMMagicError as e:
            raise UsageError(str(e)) from None
        view = StreamDisplay(markdown=format == "markdown")
        if replay:
            replayed = answer_record.replay(stream)
            if replayed is not None:
                return self._show_replayed(view, replayed, format, note)
        stream.on_status = view.status
        stream.defer_log = True  # the timeout log record comes after the answer, not in the middle of it
        view.start()
        try:
            answer = stream.consume(on_chunk=view.add)
        except BaseException as e:
            view.finish(marker=_failure_marker(e, view.text), final_text=view.text)
            if isinstance(e, LLMMagicError) and e.user_error:
                raise UsageError(str(e)) from None
            raise
        notes = [answer.time_report] if answer.time_report else []  # a timeout: where the time went
        if note:
            notes.append(note)
        notes += answer.notes  # e.g. --no-think on a model that cannot switch
        if format == "code":
            answer.value = code_for_next_cell(answer)
            if answer.value is None:
                notes.append(NO_CODE_BLOCK)
        meta = dict(answer.provenance) if answer.provenance else None
        view.finish(
            marker=answer.marker(),
            note=notes,
            metadata={"llm_magic": meta} if meta else None,
            thinking=answer.thinking,
            thinking_tokens=answer.thinking_tokens,
        )
        if meta is not None:  # the model file's hash comes later: the output's metadata follows
            self._follow_hash(view, answer, meta)
        stream.log_timeout()  # INFO, for the logs: the cell already shows it
        return answer

    def _follow_hash(self, view: StreamDisplay, answer: Answer, sent: dict[str, Any]) -> None:
        # the update comes from the hashing thread: send it as this cell's output (ipykernel keeps
        # the cell's parent header in a context variable, which a new thread does not inherit)
        cell = contextvars.copy_context()

        def update(meta: dict[str, Any]) -> None:
            cell.run(view.set_metadata, {"llm_magic": meta})

        if not answer_record.when_hashed(answer, update) and answer.provenance and answer.provenance != sent:
            update(dict(answer.provenance))  # hashed between the display and now

    def _show_replayed(self, view: StreamDisplay, answer: Answer, format: str, note: str | None) -> Answer:
        """A replayed answer: shown whole at once, marked, with the original provenance."""
        runtime.get().last_answer = answer
        notes = [answer_record.replay_note(answer)] + ([note] if note else [])
        if format == "code":
            answer.value = code_for_next_cell(answer)
            if answer.value is None:
                notes.append(NO_CODE_BLOCK)
        view.start()
        view.text = ""
        meta = {"llm_magic": dict(answer.provenance)} if answer.provenance else None
        view.finish(
            marker=answer.marker(),
            final_text=answer.text,
            note=notes,
            metadata=meta,
            thinking=answer.thinking,
            thinking_tokens=answer.thinking_tokens,
        )
        return answer

    # ---- %llm ------------------------------------------------------------------------------

    @no_var_expand
    @line_magic
    def llm(self, line: str) -> Any:
        """Manage models and conversations: %llm help lists the subcommands."""
        return dispatch(self, line)
