// JupyterLab's inline completion provider for llm_magic: ghost text streamed from the model the
// kernel already holds. JupyterLab debounces the keystrokes (the provider's `debouncerDelay`
// setting); each fetch supersedes the previous request, and a keystroke that leaves the ghost text
// behind, or Tab accepting all of it, cancels the running one in the kernel within one token.

import type {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import type { Kernel } from '@jupyterlab/services';
import type { ISettingRegistry } from '@jupyterlab/settingregistry';

import { InlineClient, type IReply } from './client';
import { activeSource, buildPrompt, precedingCells, type ISource, type Mode } from './context';

export const PROVIDER_ID = '@llm-magic/inline';

const INVOKE = 0; // InlineCompletionTriggerKind.Invoke (a const enum in 4.1, a value since)

interface ISettings {
  maxTokens: number;
  maxPrefixChars: number;
  mode: 'auto' | Mode;
}

const DEFAULTS: ISettings = { maxTokens: 64, maxPrefixChars: 8000, mode: 'auto' };

/** One request's text as it streams in. */
class Stream {
  constructor(readonly id: number) {}

  text = '';
  done = false;

  push(reply: IReply): void {
    this.text += reply.text;
    this.done = this.done || reply.done;
    const wake = this._wake;
    this._wake = null;
    if (wake) {
      wake();
    } else {
      this._pending = true; // nobody waits now: the next call to next() returns at once
    }
  }

  /** Resolves at the next reply, or at once if one came since the last call (or at the end). */
  next(): Promise<void> {
    if (this.done || this._pending) {
      this._pending = false;
      return Promise.resolve();
    }
    return new Promise(resolve => {
      this._wake = resolve;
    });
  }

  /** Resolves at the first visible text (a leading newline or indent is not yet worth showing), or at the end. */
  async first(): Promise<void> {
    while (!this.done && this.text.trim() === '') {
      await this.next();
    }
  }

  private _wake: (() => void) | null = null;
  private _pending = false;
}

/** What a running request watches to know it is no longer wanted. */
interface IWatch {
  stream: Stream;
  client: InlineClient;
  source: ISource | null; // the cell's text: its edits may cancel the completion
  head: string;
  tail: string;
  shown: string; // the text streamed so far that JupyterLab was given (from the request's cursor)
  typed: string; // what the user typed along it since: JupyterLab shows the rest
}

export class LlmMagicInlineProvider implements IInlineCompletionProvider {
  readonly name = 'llm_magic';
  readonly identifier = PROVIDER_ID;

  readonly schema: ISettingRegistry.IProperty = {
    default: {
      debouncerDelay: 200,
      timeout: 15000,
      ...DEFAULTS
    },
    properties: {
      maxTokens: {
        title: 'Maximum tokens',
        description: 'The most tokens one ghost-text completion may have (the kernel caps it at 256).',
        type: 'number',
        minimum: 1,
        maximum: 256
      },
      maxPrefixChars: {
        title: 'Context characters',
        description:
          'How much of the preceding cells and the text before the cursor is sent, in characters. Whole cells are dropped from the start, so the kernel keeps its cached prefix from one keystroke to the next.',
        type: 'number',
        minimum: 256,
        maximum: 32000
      },
      mode: {
        title: 'Completion length',
        description:
          'auto: a whole block on an empty line, after a line that opens one, or when invoked (Alt+\\); else the rest of the line.',
        type: 'string',
        enum: ['auto', 'line', 'block']
      }
    }
  };

  configure(settings: { [property: string]: unknown }): void {
    const num = (value: unknown, fallback: number, lo: number, hi: number) =>
      typeof value === 'number' && isFinite(value) ? Math.min(hi, Math.max(lo, Math.round(value))) : fallback;
    const mode = settings.mode;
    this._settings = {
      maxTokens: num(settings.maxTokens, DEFAULTS.maxTokens, 1, 256),
      maxPrefixChars: num(settings.maxPrefixChars, DEFAULTS.maxPrefixChars, 256, 32000),
      mode: mode === 'line' || mode === 'block' || mode === 'auto' ? mode : DEFAULTS.mode
    };
  }

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    try {
      return await this._fetch(request, context);
    } catch (e) {
      console.error('llm_magic: inline completion failed', e); // never a dialog: no ghost text
      return { items: [] };
    }
  }

  private async _fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    const none = { items: [] };
    this._stopRunning();
    const kernel = context.session?.kernel;
    const cells = precedingCells(context.widget);
    if (!kernel || cells === null) {
      return none;
    }
    const settings = this._settings;
    const prompt = buildPrompt(
      request,
      cells,
      settings.maxPrefixChars,
      settings.mode,
      (context.triggerKind as number) === INVOKE
    );
    const client = this._client(kernel);
    const id = this._nextId++;
    const stream = new Stream(id);
    const sent = await client.request(
      { action: 'complete', id, prefix: prompt.prefix, suffix: prompt.suffix, max_tokens: settings.maxTokens, mode: prompt.mode },
      reply => stream.push(reply)
    );
    if (!sent) {
      return none;
    }
    if (id !== this._nextId - 1) {
      client.cancel(id); // a newer fetch started while this one opened the comm
      return none;
    }
    const offset = Math.max(0, Math.min(request.offset, request.text.length));
    const watch: IWatch = {
      stream,
      client,
      source: activeSource(context.widget),
      head: request.text.slice(0, offset),
      tail: request.text.slice(offset),
      shown: '',
      typed: ''
    };
    this._running = watch;
    watch.source?.changed.connect(this._onEdit, this);
    await stream.first();
    if (this._running !== watch) {
      return none; // superseded or cancelled while waiting for its first text
    }
    if (stream.text.trim() === '') {
      this._finish(stream);
      return none;
    }
    if (stream.done) {
      this._finish(stream);
      return { items: [{ insertText: stream.text }] };
    }
    watch.shown = stream.text;
    return { items: [{ insertText: stream.text, isIncomplete: true, token: String(id) }] };
  }

  async *stream(token: string): AsyncGenerator<{ response: IInlineCompletionItem }, undefined, unknown> {
    const running = this._running;
    if (!running || String(running.stream.id) !== token) {
      return;
    }
    const stream = running.stream;
    try {
      for (;;) {
        if (this._running !== running) {
          return undefined; // stopped or superseded: its last replies are not worth showing
        }
        // text that came before this call or between two yields is shown now, not lost; what the
        // user typed along it is no longer ghost text (JupyterLab took it off the suggestion)
        if (stream.text !== running.shown || stream.done) {
          running.shown = stream.text;
          yield { response: { insertText: stream.text.slice(running.typed.length), isIncomplete: !stream.done } };
        }
        if (stream.done) {
          break;
        }
        await stream.next();
      }
    } finally {
      this._finish(stream);
    }
    return undefined;
  }

  /** Forget the kernels' clients (the extension is being torn down). */
  dispose(): void {
    this._stopRunning();
    for (const client of this._clients.values()) {
      client.dispose();
    }
    this._clients.clear();
  }

  private _client(kernel: Kernel.IKernelConnection): InlineClient {
    let client = this._clients.get(kernel.id);
    if (!client || client.isDisposed) {
      client = new InlineClient(kernel);
      this._clients.set(kernel.id, client);
      kernel.disposed.connect(() => {
        if (this._clients.get(kernel.id) === client) {
          this._clients.delete(kernel.id);
        }
      });
    }
    return client;
  }

  /** The cell changed while a completion streams: cancel it unless the user typed along the ghost text. */
  private _onEdit(_: unknown, change?: { sourceChange?: unknown }): void {
    const running = this._running;
    if (!running || !running.source || (change && typeof change === 'object' && !change.sourceChange)) {
      return; // not an edit of the text (outputs, metadata, execution count)
    }
    const now = running.source.getSource();
    const { head, tail } = running;
    const typed =
      now.length >= head.length + tail.length && now.startsWith(head) && now.endsWith(tail)
        ? now.slice(head.length, now.length - tail.length)
        : null;
    if (typed === '') {
      running.typed = '';
      return; // the text is as it was when the completion was asked for
    }
    if (typed === null || !running.stream.text.startsWith(typed) || typed === running.shown) {
      // another edit, or the whole ghost text was accepted (Tab): nothing more is wanted
      this._stopRunning();
    } else {
      running.typed = typed; // typed along the ghost text: the rest stays
    }
  }

  private _stopRunning(): void {
    const running = this._running;
    if (!running) {
      return;
    }
    this._running = null;
    running.source?.changed.disconnect(this._onEdit, this);
    if (!running.stream.done) {
      running.client.cancel(running.stream.id);
    }
  }

  private _finish(stream: Stream): void {
    if (this._running?.stream === stream) {
      this._running.source?.changed.disconnect(this._onEdit, this);
      this._running = null;
    }
  }

  private _settings: ISettings = DEFAULTS;
  private _clients = new Map<string, InlineClient>();
  private _running: IWatch | null = null;
  // increasing across page reloads, so a kernel never sees an id go back
  private _nextId = Date.now();
}
