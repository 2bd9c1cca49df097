import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';

import { InlineClient, type IReply, TARGET } from '../src/client';
import { FakeKernel, tick } from './fakes';

const collect = () => {
  const replies: IReply[] = [];
  return { replies, listener: (r: IReply) => replies.push(r) };
};

describe('InlineClient', () => {
  it('opens one comm to llm_magic.inline and routes the replies of each request', async () => {
    const kernel = new FakeKernel();
    const client = new InlineClient(kernel as any);
    const a = collect();
    assert.equal(await client.request({ action: 'complete', id: 1 }, a.listener), true);
    assert.equal(kernel.comms.length, 1);
    const comm = kernel.comms[0];
    assert.equal(comm.targetName, TARGET);
    assert.ok(comm.opened);
    assert.deepEqual(comm.sent, [{ action: 'complete', id: 1 }]);

    const b = collect();
    assert.equal(await client.request({ action: 'complete', id: 2 }, b.listener), true);
    assert.equal(kernel.comms.length, 1); // the same comm
    comm.reply(1, 'foo');
    comm.reply(2, 'bar');
    comm.reply(1, '', true);
    comm.reply(1, 'late'); // after its done: nobody listens
    comm.reply(99, 'unknown id');
    comm.onMsg({ content: { data: 'not an object' } });
    assert.deepEqual(a.replies, [
      { id: 1, text: 'foo', done: false },
      { id: 1, text: '', done: true }
    ]);
    assert.deepEqual(b.replies, [{ id: 2, text: 'bar', done: false }]);
  });

  it('cancels through the comm; the kernel still sends the done', async () => {
    const kernel = new FakeKernel();
    const client = new InlineClient(kernel as any);
    const a = collect();
    await client.request({ action: 'complete', id: 7 }, a.listener);
    client.cancel(7);
    assert.deepEqual(kernel.comms[0].sent[1], { action: 'cancel', id: 7 });
    assert.deepEqual(a.replies, []);
    kernel.comms[0].reply(7, '', true);
    assert.deepEqual(a.replies, [{ id: 7, text: '', done: true }]);
  });

  it('is silent when the kernel has no llm_magic, and asks again after a cell loads it', async () => {
    const kernel = new FakeKernel();
    kernel.onOpen = comm => setTimeout(() => comm.closeFromKernel()); // ipykernel closes a comm of an unknown target
    const client = new InlineClient(kernel as any);
    const a = collect();
    await client.request({ action: 'complete', id: 1 }, a.listener);
    await tick(5);
    assert.deepEqual(a.replies, [{ id: 1, text: '', done: true }]); // ended quietly
    const b = collect();
    assert.equal(await client.request({ action: 'complete', id: 2 }, b.listener), false);
    assert.equal(kernel.comms.length, 1); // no new comm for every keystroke
    kernel.executeInput('x = 1');
    assert.equal(await client.request({ action: 'complete', id: 3 }, b.listener), false);
    kernel.onOpen = () => undefined;
    kernel.executeInput('%load_ext llm_magic');
    assert.equal(await client.request({ action: 'complete', id: 4 }, b.listener), true);
    assert.equal(kernel.comms.length, 2);
  });

  it('opens a new comm at once after one that answered was closed (an unload or a reload)', async () => {
    const kernel = new FakeKernel();
    const client = new InlineClient(kernel as any);
    const a = collect();
    await client.request({ action: 'complete', id: 1 }, a.listener);
    kernel.comms[0].reply(1, 'x');
    kernel.comms[0].closeFromKernel(); // %unload_ext / %reload_ext closes the kernel's comms
    assert.deepEqual(a.replies.at(-1), { id: 1, text: '', done: true });
    assert.equal(await client.request({ action: 'complete', id: 2 }, collect().listener), true);
    assert.equal(kernel.comms.length, 2);
  });

  it('asks again once a cell that loads llm_magic is done, even if a request came during it', async () => {
    const kernel = new FakeKernel();
    kernel.onOpen = comm => setTimeout(() => comm.closeFromKernel()); // no target (yet)
    const client = new InlineClient(kernel as any);
    kernel.executeInput('%reload_ext llm_magic', 'reload-cell');
    await client.request({ action: 'complete', id: 1 }, collect().listener); // during the cell
    await tick(5);
    assert.equal(await client.request({ action: 'complete', id: 2 }, collect().listener), false); // quiet
    kernel.onOpen = () => undefined; // the target is registered when the cell ends
    kernel.idle('another-request');
    assert.equal(await client.request({ action: 'complete', id: 3 }, collect().listener), false);
    kernel.idle('reload-cell');
    assert.equal(await client.request({ action: 'complete', id: 4 }, collect().listener), true);
    assert.equal(kernel.comms.length, 2);
  });

  it('ends requests quietly when the kernel restarts, then opens a new comm', async () => {
    const kernel = new FakeKernel();
    const client = new InlineClient(kernel as any);
    const a = collect();
    await client.request({ action: 'complete', id: 1 }, a.listener);
    kernel.comms[0].reply(1, 'par');
    kernel.setStatus('restarting');
    assert.deepEqual(a.replies, [
      { id: 1, text: 'par', done: false },
      { id: 1, text: '', done: true }
    ]);
    kernel.setStatus('idle');
    await client.request({ action: 'complete', id: 2 }, collect().listener);
    assert.equal(kernel.comms.length, 2);
  });

  it('serves the comm on a subshell where the kernel has them, even if JupyterLab turned that off', async () => {
    const kernel = new FakeKernel();
    kernel.supportsSubshells = true;
    const created = kernel.createComm.bind(kernel);
    kernel.createComm = (target: string) => {
      const comm = created(target);
      comm.commsOverSubshells = 'disabled';
      return comm;
    };
    const client = new InlineClient(kernel as any);
    await client.request({ action: 'complete', id: 1 }, collect().listener);
    assert.equal(kernel.comms[0].commsOverSubshells, 'perCommTarget');
    assert.equal(client.onSubshell, true);
  });

  it('uses the main shell when a subshell does not start in time', async () => {
    const kernel = new FakeKernel();
    kernel.supportsSubshells = true;
    const created = kernel.createComm.bind(kernel);
    kernel.createComm = (target: string) => {
      const comm = created(target);
      comm.subshellStarted = new Promise(() => undefined); // never
      return comm;
    };
    const client = new InlineClient(kernel as any);
    const started = Date.now();
    assert.equal(await client.request({ action: 'complete', id: 1 }, collect().listener), true);
    assert.equal(client.onSubshell, false);
    assert.ok(Date.now() - started < 10_000);
  });

  it('gives up quietly on a kernel without comms, and on dispose', async () => {
    const kernel = new FakeKernel();
    kernel.handleComms = false;
    const client = new InlineClient(kernel as any);
    assert.equal(await client.request({ action: 'complete', id: 1 }, collect().listener), false);
    const other = new FakeKernel();
    const c2 = new InlineClient(other as any);
    const a = collect();
    await c2.request({ action: 'complete', id: 1 }, a.listener);
    c2.dispose();
    await tick();
    assert.deepEqual(a.replies, [{ id: 1, text: '', done: true }]);
    assert.ok(other.comms[0].isDisposed);
    assert.equal(await c2.request({ action: 'complete', id: 2 }, collect().listener), false);
  });
});
