// Stand-ins for the JupyterLab objects the extension touches: a kernel connection with comms, and
// notebook/console widgets with cells. Only the members the extension reads are here.

import { Signal } from '@lumino/signaling';

export class FakeComm {
  constructor(
    readonly kernel: FakeKernel,
    readonly targetName: string
  ) {}

  isDisposed = false;
  opened = false;
  sent: any[] = [];
  commsOverSubshells = 'perCommTarget';
  subshellStarted: Promise<void> | undefined = undefined;
  onMsg: (msg: any) => void = () => undefined;
  onClose: (msg: any) => void = () => undefined;

  open(data: any): void {
    this.opened = true;
    this.kernel.onOpen(this, data);
  }

  send(data: any): void {
    if (this.isDisposed) {
      throw new Error('Cannot send');
    }
    this.sent.push(data);
    this.kernel.onSend(this, data);
  }

  close(): void {
    this.isDisposed = true;
  }

  /** The kernel sends a reply. */
  reply(id: number, text: string, done = false): void {
    this.onMsg({ content: { data: { id, text, done } } });
  }

  /** The kernel closes the comm (e.g. no such target). */
  closeFromKernel(): void {
    this.onClose({ content: { data: {} } });
    this.isDisposed = true;
  }
}

export class FakeKernel {
  id = 'kernel-1';
  isDisposed = false;
  handleComms = true;
  supportsSubshells = false;
  info = Promise.resolve({});
  status = 'idle';
  iopubMessage = new Signal<FakeKernel, any>(this);
  statusChanged = new Signal<FakeKernel, string>(this);
  disposed = new Signal<FakeKernel, void>(this);
  comms: FakeComm[] = [];
  // what the kernel does when a comm opens and when a message comes: set by a test
  onOpen: (comm: FakeComm, data: any) => void = () => undefined;
  onSend: (comm: FakeComm, data: any) => void = () => undefined;

  createComm(target: string): FakeComm {
    const comm = new FakeComm(this, target);
    if (this.supportsSubshells) {
      comm.subshellStarted = Promise.resolve();
    }
    this.comms.push(comm);
    return comm;
  }

  setStatus(status: string): void {
    this.status = status;
    this.statusChanged.emit(status);
  }

  executeInput(code: string, msgId = 'cell-1'): void {
    this.iopubMessage.emit({ header: { msg_type: 'execute_input' }, parent_header: { msg_id: msgId }, content: { code } });
  }

  /** The kernel is done with the request ``msgId`` (a cell). */
  idle(msgId: string): void {
    this.iopubMessage.emit({
      header: { msg_type: 'status' },
      parent_header: { msg_id: msgId },
      content: { execution_state: 'idle' }
    });
  }
}

export class FakeCell {
  constructor(
    source: string,
    readonly type = 'code'
  ) {
    this._source = source;
  }

  get model() {
    const cell = this;
    return {
      type: this.type,
      sharedModel: {
        getSource: () => cell._source,
        setSource: (s: string) => {
          cell._source = s;
          cell.changed.emit({ sourceChange: [{ insert: s }] });
        },
        changed: cell.changed
      }
    };
  }

  changed = new Signal<any, any>(this);
  private _source: string;
}

/** A NotebookPanel-like widget: `content.widgets`, `activeCellIndex`, `activeCell`. */
export function notebook(cells: FakeCell[], active: number): any {
  return { content: { widgets: cells, activeCellIndex: active, activeCell: cells[active] ?? null } };
}

/** A ConsolePanel-like widget: executed cells and the prompt cell. */
export function consolePanel(executed: FakeCell[], prompt: FakeCell): any {
  return { console: { cells: { length: executed.length, get: (i: number) => executed[i] }, promptCell: prompt } };
}

export const tick = (ms = 0) => new Promise(resolve => setTimeout(resolve, ms));
