import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { EventChannelError } from '../src/hypervisor/errors.ts';
import { SimHypervisor } from '../src/hypervisor/sim/hypervisor.ts';
import type { SimDomain } from '../src/hypervisor/sim/hypervisor.ts';
import type { BackendHypervisor, EventChannel } from '../src/hypervisor/types.ts';
import { GuestRpc } from './fixtures/hypervisor/guest-rpc.ts';
import { NullXenstore } from './fixtures/hypervisor/null-xenstore.ts';

/** Resolves when `check` holds, polling every few ms; rejects after `ms`. */
async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe('simulated event channels across threads', () => {
  let hv: SimHypervisor;
  let domain: SimDomain;
  let backend: BackendHypervisor;
  let guest: GuestRpc;
  let memory: Int32Array;
  let counterFrame: number;
  // Every backend channel, so a failing test cannot leave one open (an open port keeps the process alive).
  const opened: EventChannel[] = [];
  const bind = (domid: number, port: number): EventChannel => {
    const ch = backend.events.bindInterdomain(domid, port);
    opened.push(ch);
    return ch;
  };

  before(async () => {
    hv = new SimHypervisor({ grantFrames: 1, maxEventPorts: 128 });
    domain = hv.createDomain({ name: 'events', memoryBytes: 1 << 20 });
    backend = hv.backend(new NullXenstore(0));
    guest = new GuestRpc(domain.handles);
    memory = new Int32Array(domain.handles.memory.buffer);
    counterFrame = await guest.call<number>('alloc', 1);
  });
  after(async () => {
    for (const ch of opened) ch.close();
    await guest.terminate();
  });

  /** Binds to a fresh guest port; the handler counts deliveries after the bind-time event has settled. */
  async function connect(): Promise<{ port: number; ch: EventChannel; count: () => number }> {
    const port = await guest.call<number>('evAlloc', 0);
    const ch = bind(domain.domid, port);
    let events = 0;
    ch.onEvent(() => events++);
    // Xen sets a fresh binding's local port pending: let that first event arrive, then count from 0.
    await until(() => events === 1, 'the bind-time event');
    events = 0;
    return { port, ch, count: () => events };
  }

  test('10000 ping-pongs between the main thread and a guest worker lose no wake-up', async (t) => {
    const port = await guest.call<number>('evAlloc', 0);
    const ping = counterFrame * 1024;
    const pong = ping + 1;
    Atomics.store(memory, ping, 0);
    Atomics.store(memory, pong, 0);
    await guest.call('evEcho', port, ping, pong);
    const ch = bind(domain.domid, port);
    const rounds = 10_000;
    let backendEvents = 0;
    const start = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stalled at ping ${Atomics.load(memory, ping)}, pong ${Atomics.load(memory, pong)}`)), 30_000);
      ch.onEvent(() => {
        backendEvents++;
        const sent = Atomics.load(memory, ping);
        if (Atomics.load(memory, pong) !== sent) return; // the bind-time event, or a spurious one
        if (sent === rounds) {
          clearTimeout(timer);
          resolve();
          return;
        }
        Atomics.store(memory, ping, sent + 1);
        ch.notify();
      });
      Atomics.store(memory, ping, 1);
      ch.notify();
    });
    const micros = Number(process.hrtime.bigint() - start) / 1000 / rounds;
    t.diagnostic(`round trip ${micros.toFixed(1)} µs`);
    assert.equal(await guest.call('evCount', port), rounds, 'the guest saw each ping exactly once');
    assert.ok(backendEvents === rounds || backendEvents === rounds + 1, `backend saw ${backendEvents} events`);
    ch.close();
    await guest.call('evClose', port);
  });

  test('a masked port holds events; unmask delivers them once; notifies coalesce', async () => {
    const { port, ch, count } = await connect();
    ch.mask();
    await guest.call('evNotify', port, 1000);
    await sleep(30);
    assert.equal(count(), 0, 'nothing is delivered while masked');
    ch.unmask();
    await until(() => count() === 1, 'the event held by the mask');
    await sleep(30);
    assert.equal(count(), 1, '1000 notifies while masked make one delivery');

    // The same on the guest's side.
    await guest.call('evMask', port);
    for (let i = 0; i < 5; i++) ch.notify();
    await sleep(30);
    assert.equal(await guest.call('evCount', port), 0);
    await guest.call('evUnmask', port);
    const deadline = Date.now() + 5000;
    while ((await guest.call<number>('evCount', port)) !== 1) {
      assert.ok(Date.now() < deadline, 'guest unmask did not deliver');
      await sleep(2);
    }

    // Unmasked: while this thread is busy, 1000 notifies from the worker coalesce into one delivery.
    const flag = counterFrame * 1024 + 8;
    Atomics.store(memory, flag, 0);
    const done = guest.call('evNotifyThenFlag', port, 1000, flag);
    const spinUntil = Date.now() + 5000;
    while (Atomics.load(memory, flag) === 0) if (Date.now() > spinUntil) assert.fail('worker never raised its flag');
    await done;
    await until(() => count() === 2, 'the coalesced event');
    await sleep(30);
    assert.equal(count(), 2);
    ch.close();
    await guest.call('evClose', port);
  });

  test('closing one end makes the other end unbound: its notifies are dropped, and rebinding works', async () => {
    const first = await connect();
    // Backend closes: the guest's port is unbound for dom0 again and can be bound anew.
    first.ch.close();
    first.ch.notify(); // no-op on a closed channel
    assert.throws(() => first.ch.onEvent(() => undefined), EventChannelError);
    await guest.call('evNotify', first.port, 3); // dropped: the guest's port is unbound
    const again = bind(domain.domid, first.port);
    let events = 0;
    again.onEvent(() => events++);
    await until(() => events >= 1, 'the bind-time event of the second binding');
    events = 0;
    await guest.call('evNotify', first.port, 1);
    await until(() => events === 1, 'an event over the rebound channel');
    assert.throws(() => backend.events.bindInterdomain(domain.domid, first.port), /not unbound for domain 0 \(it is already bound to domain 0\)/);

    // Guest closes: the backend's port goes unbound and its notifies reach nothing, even a new port
    // that reuses the number.
    await guest.call('evClose', first.port);
    assert.throws(() => backend.events.bindInterdomain(domain.domid, first.port), /not unbound for domain 0 \(it is closed\)/);
    const reused = await guest.call<number>('evAlloc', 0);
    again.notify();
    await sleep(30);
    assert.equal(await guest.call('evCount', reused), 0);
    again.close();

    const forOther = await guest.call<number>('evAlloc', 7);
    assert.throws(
      () => backend.events.bindInterdomain(domain.domid, forOther),
      (error: unknown) => {
        assert.ok(error instanceof EventChannelError);
        assert.equal(error.code, 'BLK_ERR_EVTCHN');
        assert.match(
          error.message,
          new RegExp(`cannot bind to port ${forOther} of domain ${domain.domid}: not unbound for domain 0 \\(it is unbound for domain 7\\)`),
        );
        return true;
      },
    );
    assert.throws(() => backend.events.bindInterdomain(domain.domid, 128), /no such port \(1\.\.127\)/);
    assert.throws(() => backend.events.bindInterdomain(42, 1), /domain 42: no such domain/);
    await guest.call('evClose', forOther);
    await guest.call('evClose', reused);
  });

  test('destroying a domain closes its ports', async () => {
    const dom = hv.createDomain({ name: 'doomed', memoryBytes: 65536 });
    const rpc = new GuestRpc(dom.handles);
    try {
      const port = await rpc.call<number>('evAlloc', 0);
      const ch = bind(dom.domid, port);
      ch.onEvent(() => undefined);
      hv.destroyDomain(dom.domid);
      ch.notify(); // dropped: the peer is gone
      await sleep(10);
      assert.equal(await rpc.call('evCount', port), 0);
      assert.throws(() => backend.events.bindInterdomain(dom.domid, port), /no such domain/);
      ch.close();
    } finally {
      await rpc.terminate();
    }
  });
});

describe('each domain sees only its own end of its event channels', () => {
  test('a guest that masks every port it can reach, writes over every table it holds and spams its port stalls no other channel', async () => {
    const hv = new SimHypervisor({ grantFrames: 1, maxEventPorts: 128 });
    const good = hv.createDomain({ name: 'good', memoryBytes: 1 << 20 });
    const bad = hv.createDomain({ name: 'vandal', memoryBytes: 1 << 20 });
    const backend = hv.backend(new NullXenstore(0));
    const goodRpc = new GuestRpc(good.handles);
    const badRpc = new GuestRpc(bad.handles);
    const channels: EventChannel[] = [];
    try {
      const goodPort = await goodRpc.call<number>('evAlloc', 0);
      const badPort = await badRpc.call<number>('evAlloc', 0);
      const toGood = backend.events.bindInterdomain(good.domid, goodPort);
      const toBad = backend.events.bindInterdomain(bad.domid, badPort);
      channels.push(toGood, toBad);
      let fromGood = 0;
      let fromBad = 0;
      toGood.onEvent(() => fromGood++);
      toBad.onEvent(() => fromBad++);
      await until(() => fromGood === 1 && fromBad === 1, 'the bind-time events');
      fromGood = 0;
      fromBad = 0;

      // Both ways on the good guest's channel, after each attack.
      let round = 0;
      const goodChannelWorks = async (what: string): Promise<void> => {
        round++;
        await goodRpc.call('evNotify', goodPort, 1);
        await until(() => fromGood === round, `the good guest's event to dom0 ${what}`, 3000);
        toGood.notify();
        const deadline = Date.now() + 3000;
        while ((await goodRpc.call<number>('evCount', goodPort)) !== round) {
          assert.ok(Date.now() < deadline, `dom0's event to the good guest ${what}`);
          await sleep(2);
        }
      };
      await goodChannelWorks('before any attack');

      // A notify storm on its own port reaches its own channel in dom0 and nothing else.
      await badRpc.call('evNotify', badPort, 100_000);
      await until(() => fromBad >= 1, "the vandal's own events");
      await goodChannelWorks('after a notify storm on another port');

      const masked = await badRpc.call<number>('vandal', 0);
      await goodChannelWorks('after a guest masked every port in every table it holds');
      assert.equal(masked, 1, 'the only event table a guest holds is its own');
      // dom0's end of the vandal's own channel is dom0's: its sends still arrive.
      const beforeSpam = fromBad;
      await badRpc.call('evNotify', badPort, 1);
      await until(() => fromBad === beforeSpam + 1, "the vandal's send after masking its own ports");

      const overwritten = await badRpc.call<number>('vandal', 1);
      assert.ok(overwritten >= 1);
      await goodChannelWorks('after a guest wrote all-ones over every shared buffer it holds');
      toBad.notify(); // into the vandal's garbage: must not throw or reach anyone else
      await sleep(20);
      assert.equal(fromGood, round, 'no stray events on the good channel');
    } finally {
      for (const ch of channels) ch.close();
      await goodRpc.terminate();
      await badRpc.terminate();
    }
  });
});
