// One kernel's end of the `llm_magic.inline` comm: opens it (on a subshell where the kernel has
// them), sends requests and routes the streamed `{id, text, done}` replies to their listeners.
// A kernel without llm_magic closes the comm at once; the client then stays silent until a cell
// that mentions llm_magic has run, the kernel restarts, or a minute has passed. A comm that had
// answered and then closed (an unload or a reload) is opened again at the next request.

import type { Kernel, KernelMessage } from '@jupyterlab/services';

export const TARGET = 'llm_magic.inline';

/** A reply of the kernel: a piece of text, or the request's end (`done`, empty text). */
export interface IReply {
  id: number | null;
  text: string;
  done: boolean;
}

export type Listener = (reply: IReply) => void;

const RETRY_MS = 60_000; // a kernel that had no llm_magic is asked again after this long
const SUBSHELL_WAIT_MS = 3_000; // how long a new comm waits for its subshell before using the main shell

// What @jupyterlab/services ≥ 7.4 (JupyterLab 4.4) adds for JEP 91 subshells; absent before.
interface ISubshellComm {
  commsOverSubshells?: string;
  subshellStarted?: Promise<void>;
}

export class InlineClient {
  constructor(kernel: Kernel.IKernelConnection) {
    this._kernel = kernel;
    kernel.iopubMessage.connect(this._onIopub, this);
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.disposed.connect(() => this.dispose());
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Whether requests go through a kernel subshell (known once the comm is open). */
  get onSubshell(): boolean {
    return this._onSubshell;
  }

  /**
   * Send a request; `listener` gets its replies. Resolves false, having called nothing, when the
   * kernel has no llm_magic (or no comms): the caller stays silent.
   */
  async request(data: { id: number; [key: string]: unknown }, listener: Listener): Promise<boolean> {
    const comm = await this._ensureComm();
    if (!comm || comm.isDisposed) {
      return false;
    }
    this._listeners.set(data.id, listener);
    try {
      comm.send(data as any);
    } catch (e) {
      this._listeners.delete(data.id);
      return false;
    }
    return true;
  }

  /** Stop a request early; its `done` still comes (or is made up if the comm is gone). */
  cancel(id: number): void {
    const comm = this._comm;
    if (comm && !comm.isDisposed && this._listeners.has(id)) {
      try {
        comm.send({ action: 'cancel', id });
        return;
      } catch (e) {
        // the comm went away: end the request here
      }
    }
    this._end(id);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._endAll();
    this._kernel.iopubMessage.disconnect(this._onIopub, this);
    this._kernel.statusChanged.disconnect(this._onStatus, this);
    const comm = this._comm;
    this._comm = null;
    if (comm && !comm.isDisposed && !this._kernel.isDisposed) {
      try {
        comm.close();
      } catch (e) {
        // the kernel is going away
      }
    }
  }

  private async _ensureComm(): Promise<Kernel.IComm | null> {
    if (this._disposed) {
      return null;
    }
    if (this._comm && !this._comm.isDisposed) {
      return this._comm;
    }
    if (this._opening) {
      return this._opening;
    }
    if (this._absentSince !== null && Date.now() - this._absentSince < RETRY_MS) {
      return null;
    }
    this._absentSince = null;
    this._opening = this._open().finally(() => {
      this._opening = null;
    });
    return this._opening;
  }

  private async _open(): Promise<Kernel.IComm | null> {
    const kernel = this._kernel;
    if (kernel.isDisposed || !kernel.handleComms) {
      return null;
    }
    try {
      await kernel.info;
    } catch (e) {
      return null;
    }
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm(TARGET);
    } catch (e) {
      return null;
    }
    // Serve completions on a subshell so that they keep coming while a cell runs. JupyterLab
    // ≥ 4.4 does this per comm target by default; a user who turned it off gets it for this comm.
    const sub = comm as unknown as ISubshellComm;
    const supports = (kernel as unknown as { supportsSubshells?: boolean }).supportsSubshells === true;
    if (supports && sub.subshellStarted !== undefined) {
      if (sub.commsOverSubshells === 'disabled') {
        sub.commsOverSubshells = 'perCommTarget';
      }
      this._onSubshell = await Promise.race([
        sub.subshellStarted.then(
          () => true,
          () => false
        ),
        new Promise<boolean>(resolve => setTimeout(() => resolve(false), SUBSHELL_WAIT_MS))
      ]);
    }
    let answered = false;
    comm.onMsg = msg => {
      answered = true;
      this._onReply(msg.content.data as unknown as IReply);
    };
    comm.onClose = () => {
      if (this._comm !== null && this._comm !== comm) {
        return; // an older comm closing late
      }
      this._comm = null;
      // A comm of an unknown target is closed before any reply: llm_magic is not loaded, stay
      // quiet for a while. One that answered was closed by an unload or a reload: ask again.
      this._absentSince = answered ? null : Date.now();
      this._endAll(); // every open request ends quietly
    };
    try {
      comm.open({});
    } catch (e) {
      return null;
    }
    this._comm = comm;
    return comm;
  }

  private _onReply(reply: IReply): void {
    if (!reply || typeof reply !== 'object' || typeof reply.id !== 'number') {
      return;
    }
    const listener = this._listeners.get(reply.id);
    if (!listener) {
      return;
    }
    const done = reply.done === true;
    if (done) {
      this._listeners.delete(reply.id);
    }
    listener({ id: reply.id, text: typeof reply.text === 'string' ? reply.text : '', done });
  }

  private _end(id: number): void {
    const listener = this._listeners.get(id);
    if (listener) {
      this._listeners.delete(id);
      listener({ id, text: '', done: true });
    }
  }

  private _endAll(): void {
    for (const id of Array.from(this._listeners.keys())) {
      this._end(id);
    }
  }

  private _onIopub(_: Kernel.IKernelConnection, msg: KernelMessage.IIOPubMessage): void {
    // A cell that mentions llm_magic (%load_ext, %reload_ext, import): ask again at the next
    // keystroke, and again once that cell is done (a request during it may find no target yet).
    const parent = (msg.parent_header as { msg_id?: string } | undefined)?.msg_id;
    const type = msg.header.msg_type;
    if (type === 'execute_input') {
      const code = (msg.content as { code?: unknown }).code;
      if (typeof code === 'string' && code.includes('llm_magic')) {
        this._absentSince = null;
        this._loadingCell = parent ?? null;
      }
    } else if (
      type === 'status' &&
      this._loadingCell !== null &&
      parent === this._loadingCell &&
      (msg.content as { execution_state?: string }).execution_state === 'idle'
    ) {
      this._loadingCell = null;
      this._absentSince = null;
    }
  }

  private _onStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // requests in flight end quietly; the restarted kernel gets a new comm
      this._endAll();
      this._comm = null;
      this._absentSince = null;
    }
  }

  private _kernel: Kernel.IKernelConnection;
  private _comm: Kernel.IComm | null = null;
  private _opening: Promise<Kernel.IComm | null> | null = null;
  private _absentSince: number | null = null;
  private _loadingCell: string | null = null; // the msg_id of a running cell that mentions llm_magic
  private _listeners = new Map<number, Listener>();
  private _onSubshell = false;
  private _disposed = false;
}
