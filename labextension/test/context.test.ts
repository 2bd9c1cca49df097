import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { TRIM_STEP, buildPrompt, chooseMode, precedingCells } from '../src/context';
import { FakeCell, consolePanel, notebook } from './fakes';

const request = (text: string, offset = text.length) => ({ text, offset });

describe('precedingCells', () => {
  it('gives the code cells before the active one', () => {
    const cells = [new FakeCell('a = 1'), new FakeCell('# title', 'markdown'), new FakeCell('b = 2'), new FakeCell('c')];
    assert.deepEqual(precedingCells(notebook(cells, 3)), ['a = 1', 'b = 2']);
    assert.deepEqual(precedingCells(notebook(cells, 0)), []);
  });

  it('gives nothing to complete in a markdown cell, or in an unknown widget', () => {
    const cells = [new FakeCell('a = 1'), new FakeCell('# title', 'markdown')];
    assert.equal(precedingCells(notebook(cells, 1)), null);
    assert.equal(precedingCells({} as any), null);
    assert.equal(precedingCells(undefined), null);
  });

  it("gives a console's executed cells", () => {
    const widget = consolePanel([new FakeCell('x = 1'), new FakeCell('y = x')], new FakeCell('pri'));
    assert.deepEqual(precedingCells(widget), ['x = 1', 'y = x']);
  });
});

describe('buildPrompt', () => {
  it('joins the preceding cells and the text before the cursor; the rest is the suffix', () => {
    const p = buildPrompt(request('def f(x):\n    return x', 9), ['import math'], 8000, 'line', false);
    assert.equal(p.prefix, 'import math\n\ndef f(x):');
    assert.equal(p.suffix, '\n    return x');
  });

  it('drops whole cells from the start, so the prefix stays the same as the cell grows', () => {
    const cells = ['a'.repeat(300), 'b'.repeat(300), 'c'.repeat(300)];
    const prefixes: string[] = [];
    for (let n = 1; n <= 200; n++) {
      prefixes.push(buildPrompt(request('x'.repeat(n)), cells, 1000, 'line', false).prefix);
    }
    const starts = new Set(prefixes.map(p => p.slice(0, 10)));
    assert.deepEqual([...starts], ['aaaaaaaaaa', 'bbbbbbbbbb']); // one cell dropped once, never a slide
    for (const p of prefixes) {
      assert.ok(p.length <= 1000, `${p.length}`);
    }
    // between two drops, each keystroke only adds to the end
    for (let i = 1; i < prefixes.length; i++) {
      if (prefixes[i].slice(0, 10) === prefixes[i - 1].slice(0, 10)) {
        assert.ok(prefixes[i].startsWith(prefixes[i - 1]));
      }
    }
  });

  it('cuts a current cell over budget in whole steps from its start', () => {
    const text = 'y'.repeat(TRIM_STEP * 2 + 100);
    const p1 = buildPrompt(request(text), ['z = 1'], TRIM_STEP * 2, 'line', false);
    assert.ok(p1.prefix === 'z = 1\n\n' + text.slice(TRIM_STEP), 'one step cut, the cell still fits');
    const p2 = buildPrompt(request(text + 'w'), ['z = 1'], TRIM_STEP * 2, 'line', false);
    assert.ok(p2.prefix.startsWith(p1.prefix), 'the next keystroke keeps the same start');
    const p3 = buildPrompt(request(text), ['z'.repeat(TRIM_STEP)], TRIM_STEP * 2, 'line', false);
    assert.ok(p3.prefix === text.slice(TRIM_STEP), 'a cell that does not fit is left out whole');
  });

  it('clamps a cursor offset outside the text', () => {
    const p = buildPrompt({ text: 'abc', offset: 99 }, [], 100, 'line', false);
    assert.equal(p.prefix, 'abc');
    assert.equal(p.suffix, '');
  });
});

describe('chooseMode', () => {
  it('completes a block where one is expected, else the line', () => {
    assert.equal(chooseMode('def f(x):', false), 'block');
    assert.equal(chooseMode('x = foo(', false), 'block');
    assert.equal(chooseMode('data = [', false), 'block');
    assert.equal(chooseMode('a = 1\n    ', false), 'block');
    assert.equal(chooseMode('x = math.sq', false), 'line');
    assert.equal(chooseMode('x = math.sq', true), 'block'); // invoked by the user
  });

  it('follows the setting unless it is auto', () => {
    assert.equal(buildPrompt(request('def f():'), [], 100, 'line', false).mode, 'line');
    assert.equal(buildPrompt(request('x = 1'), [], 100, 'block', false).mode, 'block');
    assert.equal(buildPrompt(request('x = 1'), [], 100, 'auto', false).mode, 'line');
  });
});
