export type Target = 'realchat' | 'centrifugo' | 'socketio' | 'ws';
export const TARGETS: readonly Target[] = ['realchat', 'centrifugo', 'socketio', 'ws'];
export type Scenario = 'idle' | 'pairs' | 'group' | 'reconnect-storm';
export const SCENARIOS: readonly Scenario[] = ['idle', 'pairs', 'group', 'reconnect-storm'];
/** Which worker program holds the connections: perf/worker.ts (forked, IPC) or perf/go/loadgen (JSON lines). */
export type Engine = 'node' | 'go';
export const ENGINES: readonly Engine[] = ['node', 'go'];
/** The targets the Go worker speaks (no Socket.IO client in Go). */
export const GO_TARGETS: readonly Target[] = ['realchat', 'ws', 'centrifugo'];

/** One simulated client connection. */
export interface ConnSpec {
  idx: number; // global connection index
  userId: string;
  token: string;
  convs: string[];
  localAddress: string;
  /** Per-connection server URL (cluster scenario: connections spread over gateway nodes). */
  url?: string;
  /**
   * Explicit local port (cluster scenario). bind() to an address with port 0 searches the whole
   * ephemeral range for a free port, which turns quadratic (mostly system time) at tens of
   * thousands of sockets; explicit (address, port) pairs avoid the search.
   */
  localPort?: number;
}

/** A sender slot: message k is sent by slots[k % slots.length]. */
export interface SlotSpec {
  conn: number;
  conv: string;
}

export interface WorkerInit {
  workerId: number;
  target: Target;
  url: string;
  runId: string;
  conns: ConnSpec[];
  payloadBytes: number;
}

export type ParentMsg =
  | { cmd: 'init'; init: WorkerInit }
  | { cmd: 'connect'; upTo: number; ratePerS: number }
  | { cmd: 'send'; startMs: number; rate: number; total: number; slots: SlotSpec[] }
  | { cmd: 'storm'; atMs: number; ratePerS: number }
  | { cmd: 'report' }
  | { cmd: 'close' };

export interface ConnectResult {
  attempted: number;
  open: number;
  failed: number;
  first_attempt_ms: number;
  last_open_ms: number;
}

export interface WorkerReport {
  workerId: number;
  hist: string; // encoded HDR histogram (microseconds)
  sent: number;
  acked: number;
  delivered: number; // unique (by sequence/offset) deliveries
  duplicates: number;
  gaps: number;
  errors: Record<string, number>;
  acked_per_conv: Record<string, number>;
  unique_per_conn_conv: Array<[number, string, number]>; // [conn idx, conv, unique count]
  first_recv_ms: number;
  last_recv_ms: number;
  open: number;
  storm?: { dropped: number; reopened: number; resumed_ms: number[]; reopen_ms: number[]; failed: number };
}

export type WorkerMsg =
  | { ev: 'ready'; workerId: number }
  | { ev: 'connected'; workerId: number; result: ConnectResult }
  | { ev: 'sent'; workerId: number }
  | { ev: 'stormed'; workerId: number }
  | { ev: 'report'; report: WorkerReport }
  | { ev: 'log'; workerId: number; msg: string };
