/**
 * A logger whose lines a test reads back (the warnings a component logs while it recovers), keeping
 * the last `keep` lines at most.
 */
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../common/log.js';

export function capturedLogger(keep = 500): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({
    level: 'warn',
    nodeId: 'test',
    role: 'test',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        if (lines.length > keep) lines.splice(0, lines.length - keep / 2);
        done();
      },
    }),
  });
  return { log, lines };
}
