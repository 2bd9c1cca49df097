import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { LlmMagicInlineProvider } from '../src/provider';
import { FakeCell, FakeKernel, notebook, tick } from './fakes';

const AUTOMATIC = 1;

function setup(source = 'def f(x):') {
  const kernel = new FakeKernel();
  const requests: any[] = [];
  kernel.onSend = (_, data) => requests.push(data);
  const cells = [new FakeCell('import math'), new FakeCell(source)];
  const context = { widget: notebook(cells, 1), session: { kernel }, triggerKind: AUTOMATIC };
  const provider = new LlmMagicInlineProvider();
  const request = { text: source, offset: source.length };
  return { kernel, requests, cells, context: context as any, provider, request };
}

/** The comm the provider opened, once the request is on its way. */
async function comm(kernel: FakeKernel) {
  for (let i = 0; i < 100 && !kernel.comms.length; i++) {
    await tick();
  }
  return kernel.comms[0];
}

/** A fetch whose first reply is ``first``: the comm, the request's id and the item JupyterLab gets. */
async function fetchShowing(s: ReturnType<typeof setup>, first: string) {
  const fetched = s.provider.fetch(s.request, s.context);
  const c = await comm(s.kernel);
  const id = s.requests[0].id;
  c.reply(id, first);
  const item = (await fetched).items[0];
  return { c, id, item };
}

describe('LlmMagicInlineProvider', () => {
  it('sends the prefix, suffix and mode, shows the first visible text, then streams the rest', async () => {
    const { kernel, requests, context, provider, request } = setup();
    const fetched = provider.fetch(request, context);
    const c = await comm(kernel);
    const id = requests[0].id;
    assert.deepEqual(requests[0], {
      action: 'complete',
      id,
      prefix: 'import math\n\ndef f(x):',
      suffix: '',
      max_tokens: 64,
      mode: 'block'
    });
    c.reply(id, '\n'); // not worth showing yet
    c.reply(id, '    return');
    const list = await fetched;
    assert.equal(list.items.length, 1);
    const item = list.items[0];
    assert.equal(item.insertText, '\n    return');
    assert.equal(item.isIncomplete, true);

    const updates: string[] = [];
    const streaming = (async () => {
      for await (const { response } of provider.stream(item.token!)) {
        updates.push(`${response.insertText}|${response.isIncomplete}`);
      }
    })();
    await tick();
    c.reply(id, ' x');
    await tick();
    c.reply(id, ' * 2');
    await tick();
    c.reply(id, '', true);
    await streaming;
    assert.deepEqual(updates, ['\n    return x|true', '\n    return x * 2|true', '\n    return x * 2|false']);
  });

  it('loses no text that comes between two steps of the stream, or before it starts', async () => {
    const s = setup();
    const { provider } = s;
    const { c, id, item } = await fetchShowing(s, 'return');
    c.reply(id, ' x'); // before stream() is called
    c.reply(id, ' * 2');
    c.reply(id, '', true);
    const updates: string[] = [];
    for await (const { response } of provider.stream(item.token!)) {
      updates.push(`${response.insertText}|${response.isIncomplete}`);
    }
    assert.deepEqual(updates, ['return x * 2|false']);
  });

  it('after typing along the ghost text, the stream shows only the rest of it', async () => {
    const s = setup('x = ');
    const { requests, cells, provider } = s;
    const { c, id, item } = await fetchShowing(s, 'math');
    cells[1].model.sharedModel.setSource('x = ma'); // JupyterLab now shows 'th'
    c.reply(id, '.pi');
    c.reply(id, '', true);
    const updates: string[] = [];
    for await (const { response } of provider.stream(item.token!)) {
      updates.push(response.insertText);
    }
    assert.deepEqual(updates, ['th.pi']);
    assert.equal(requests.length, 1); // typing along cancelled nothing
  });

  it('Tab accepting what is shown ends the completion, though more text came since', async () => {
    const s = setup('x = ');
    const { requests, cells, provider } = s;
    const { c, id, item } = await fetchShowing(s, 'math');
    const gen = provider.stream(item.token!);
    const step = gen.next();
    c.reply(id, '.pi');
    assert.equal((await step).value?.response.insertText, 'math.pi'); // shown now
    c.reply(id, ' * 2'); // arrives while JupyterLab still shows 'math.pi'
    cells[1].model.sharedModel.setSource('x = math.pi'); // Tab
    assert.deepEqual(requests[1], { action: 'cancel', id });
    c.reply(id, '', true);
    assert.equal((await gen.next()).done, true); // and nothing more is shown
  });

  it('a superseded stream shows nothing more', async () => {
    const s = setup();
    const { requests, context, provider, request } = s;
    const { c, id: id1, item } = await fetchShowing(s, 'return');
    const gen = provider.stream(item.token!);
    const step = gen.next();
    const second = provider.fetch({ text: request.text + 'x', offset: request.offset + 1 }, context);
    await tick();
    c.reply(id1, ' x');
    c.reply(id1, '', true);
    assert.equal((await step).done, true);
    c.reply(requests[2].id, '', true);
    await second;
  });

  it('gives no items for an empty answer, a kernel without llm_magic, or no kernel', async () => {
    const s = setup();
    const fetched = s.provider.fetch(s.request, s.context);
    const c = await comm(s.kernel);
    c.reply(s.requests[0].id, '  ', false);
    c.reply(s.requests[0].id, '', true);
    assert.deepEqual(await fetched, { items: [] });

    const t = setup();
    t.kernel.onOpen = cm => setTimeout(() => cm.closeFromKernel());
    assert.deepEqual(await t.provider.fetch(t.request, t.context), { items: [] });
    assert.deepEqual(await t.provider.fetch(t.request, t.context), { items: [] }); // and no new comm
    assert.equal(t.kernel.comms.length, 1);

    const u = setup();
    assert.deepEqual(await u.provider.fetch(u.request, { ...u.context, session: null }), { items: [] });
    assert.equal(u.kernel.comms.length, 0);
  });

  it('answers a complete reply at once, without streaming', async () => {
    const { kernel, requests, context, provider, request } = setup();
    const fetched = provider.fetch(request, context);
    const c = await comm(kernel);
    c.reply(requests[0].id, 'pass', false);
    c.reply(requests[0].id, '', true);
    await tick();
    const list = await fetched;
    assert.deepEqual(list.items, [{ insertText: 'pass' }]);
  });

  it('a newer fetch cancels the running completion', async () => {
    const s = setup();
    const { requests, context, provider, request } = s;
    const { c, id: id1 } = await fetchShowing(s, 'return');
    const second = provider.fetch({ text: request.text + ' ', offset: request.offset + 1 }, context);
    await tick();
    assert.deepEqual(requests[1], { action: 'cancel', id: id1 });
    const id2 = requests[2].id;
    assert.ok(id2 > id1);
    c.reply(id1, '', true);
    c.reply(id2, 'ok');
    c.reply(id2, '', true);
    assert.deepEqual((await second).items, [{ insertText: 'ok' }]);
  });

  it('typing along the ghost text keeps it; any other edit cancels it', async () => {
    const s = setup('x = ');
    const { requests, cells } = s;
    const { id } = await fetchShowing(s, 'math.pi');
    cells[1].model.sharedModel.setSource('x = ma'); // along the ghost text
    assert.equal(requests.length, 1);
    cells[1].model.sharedModel.setSource('x = mb'); // something else
    assert.deepEqual(requests[1], { action: 'cancel', id });
  });

  it('accepting the whole ghost text ends the completion', async () => {
    const s = setup('x = ');
    const { requests, cells } = s;
    const { id } = await fetchShowing(s, 'math.pi');
    cells[1].model.sharedModel.setSource('x = math.pi'); // Tab
    assert.deepEqual(requests[1], { action: 'cancel', id });
  });

  it('takes its settings from JupyterLab, within bounds', async () => {
    const { kernel, requests, context, provider, request } = setup('y = 1');
    provider.configure({ maxTokens: 9999, maxPrefixChars: 5, mode: 'block', debouncerDelay: 100 });
    const fetched = provider.fetch(request, context);
    const c = await comm(kernel);
    assert.equal(requests[0].max_tokens, 256);
    assert.equal(requests[0].mode, 'block');
    assert.equal(requests[0].prefix, 'import math\n\ny = 1'); // 5 characters is raised to 256
    c.reply(requests[0].id, '', true);
    await fetched;
    provider.configure({ maxTokens: 'many', mode: 'sideways' });
    const again = provider.fetch(request, context);
    await tick();
    assert.equal(requests[1].max_tokens, 64);
    assert.equal(requests[1].mode, 'line');
    c.reply(requests[1].id, '', true);
    await again;
  });
});
