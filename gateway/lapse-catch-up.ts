/**
 * A node's answer to a lapse in its presence registration (gateway/presence-agent.ts): while it was
 * out of the registry, delivery workers routed its users' messages to no node. Once it is back, every
 * connection is caught up from the database (`via: resume`); a gap a connection sees meanwhile is
 * filled as part of that catch-up (`resume` too), not reported as a pipeline loss (`fill`).
 */
import type { Logger } from '../common/log.js';
import type { Metrics } from '../common/metrics.js';
import type { Connection } from './connection.js';
import type { LapseHandler } from './presence-agent.js';

export interface RegistrationLapse extends LapseHandler {
  /** A lapse is suspected and its catch-up not done yet. */
  active(): boolean;
}

export function createLapseCatchUp(deps: {
  connections: () => Iterable<Connection>;
  lastSequences(conversationIds: string[]): Promise<Array<{ conversation_id: string; last_seq: number }>>;
  log: Logger;
  metrics: Metrics;
  /** Conversations per database read. */
  chunk?: number;
  /** How long the catch-up waits for connections still in hello (their conversations not yet known). */
  helloWaitMs?: number;
}): RegistrationLapse {
  const chunk = deps.chunk ?? 1000;
  const helloWaitMs = deps.helloWaitMs ?? 10_000;
  // Bumped by each suspicion: a catch-up ends the lapse only if no new one began while it ran.
  let epoch = 0;
  let suspected = false;

  async function settledConnections(): Promise<Connection[]> {
    const deadline = Date.now() + helloWaitMs;
    for (;;) {
      const conns = [...deps.connections()].filter((c) => !c.closed);
      // A hello that read its conversations before the node was registered again has to be covered too.
      if (conns.every((c) => !c.activating) || Date.now() > deadline) return conns.filter((c) => !c.activating);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  return {
    active: () => suspected,
    suspect() {
      epoch++;
      suspected = true;
      deps.metrics.presenceLapses.inc();
    },
    async recover() {
      const started = epoch;
      const conns = await settledConnections();
      const conversations = [...new Set(conns.flatMap((c) => [...c.subscriptions()]))];
      const latest = new Map<string, number>();
      for (let i = 0; i < conversations.length; i += chunk) {
        for (const r of await deps.lastSequences(conversations.slice(i, i + chunk))) latest.set(r.conversation_id, Number(r.last_seq));
      }
      let behind = 0;
      for (const c of conns) behind += c.catchUp(latest);
      deps.log.info({ connections: conns.length, conversations: conversations.length, behind }, 'caught up after a presence lapse');
      if (epoch === started) suspected = false;
    },
  };
}
