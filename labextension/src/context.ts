// What a completion request sends: the preceding cells plus the text before the cursor as
// `prefix`, the rest of the cell as `suffix`, trimmed to a budget in stable steps so that the
// kernel's cached prefix survives a keystroke, and whether to stop at the end of the line or block.
// The one place that knows the shape of JupyterLab's notebook and console widgets.

import type { CompletionHandler } from '@jupyterlab/completer';
import type { ISignal } from '@lumino/signaling';
import type { Widget } from '@lumino/widgets';

export type Mode = 'line' | 'block';

export interface IPrompt {
  prefix: string;
  suffix: string;
  mode: Mode;
}

/** A cell's shared model: its text, and a signal on every change. */
export interface ISource {
  getSource(): string;
  changed: ISignal<any, any>;
}

/** What the extension reads of a cell widget. */
interface ICellLike {
  model: { type: string; sharedModel: ISource };
}

/** What it reads of a notebook panel (`content`) or a console panel (`console`). */
interface IPanelLike {
  content?: { widgets?: ReadonlyArray<ICellLike>; activeCellIndex?: number; activeCell?: ICellLike | null };
  console?: { cells?: { length: number; get(i: number): ICellLike }; promptCell?: ICellLike | null };
}

const CELL_SEPARATOR = '\n\n';
export const TRIM_STEP = 4096; // a current cell over budget loses its start in steps this long

/** The code cells before the active one in a notebook or console widget; null for other widgets. */
export function precedingCells(widget: Widget | undefined): string[] | null {
  if (!widget) {
    return null;
  }
  const w = widget as unknown as IPanelLike;
  const sources = (cells: Iterable<ICellLike>) => {
    const out: string[] = [];
    for (const cell of cells) {
      if (cell.model.type === 'code') {
        out.push(cell.model.sharedModel.getSource());
      }
    }
    return out;
  };
  const notebook = w.content;
  if (notebook && Array.isArray(notebook.widgets) && typeof notebook.activeCellIndex === 'number') {
    if (!notebook.activeCell || notebook.activeCell.model.type !== 'code') {
      return null; // markdown and raw cells get no code completions
    }
    return sources(notebook.widgets.slice(0, Math.max(0, notebook.activeCellIndex)));
  }
  const console = w.console;
  if (console && console.cells) {
    const executed: ICellLike[] = [];
    for (let i = 0; i < console.cells.length; i++) {
      executed.push(console.cells.get(i));
    }
    return sources(executed);
  }
  return null;
}

/** The shared model of the cell being completed: the notebook's active cell or the console's prompt. */
export function activeSource(widget: Widget | undefined): ISource | null {
  const w = (widget ?? {}) as unknown as IPanelLike;
  const cell = w.content?.activeCell ?? w.console?.promptCell ?? null;
  return cell?.model.sharedModel ?? null;
}

/**
 * The request's prefix and suffix within `budget` characters of prefix. Whole cells are dropped
 * from the start, oldest first, so the prefix stays the same from one keystroke to the next; a
 * current cell that alone is over budget loses its start in steps of `TRIM_STEP` characters.
 */
export function buildPrompt(
  request: CompletionHandler.IRequest,
  cells: string[],
  budget: number,
  mode: 'auto' | Mode,
  invoked: boolean
): IPrompt {
  const offset = Math.max(0, Math.min(request.offset, request.text.length));
  let head = request.text.slice(0, offset);
  const suffix = request.text.slice(offset);
  if (head.length > budget) {
    const cut = Math.ceil((head.length - budget) / TRIM_STEP) * TRIM_STEP;
    head = head.slice(Math.min(cut, head.length));
  }
  let size = head.length;
  const kept: string[] = [];
  for (let i = cells.length - 1; i >= 0; i--) {
    const add = cells[i].length + CELL_SEPARATOR.length;
    if (size + add > budget) {
      break;
    }
    kept.unshift(cells[i]);
    size += add;
  }
  const prefix = kept.length ? kept.join(CELL_SEPARATOR) + CELL_SEPARATOR + head : head;
  return { prefix, suffix, mode: mode === 'auto' ? chooseMode(head, invoked) : mode };
}

/**
 * A whole block where one is expected (asked for with the invoke shortcut, on an empty line, or
 * after a line that opens one), else the rest of the line.
 */
export function chooseMode(head: string, invoked: boolean): Mode {
  if (invoked) {
    return 'block';
  }
  const line = head.slice(head.lastIndexOf('\n') + 1);
  if (line.trim() === '') {
    return 'block';
  }
  return /[:([{,\\]\s*$/.test(line) ? 'block' : 'line';
}
