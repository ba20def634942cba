import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** JSON logs only. Field names used across roles: trace_id, conversation_id, message_id, node_id. */
export function createLogger(opts: { level: string; nodeId: string; role: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      level: opts.level,
      base: { role: opts.role, node_id: opts.nodeId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination,
  );
}
