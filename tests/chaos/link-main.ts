/**
 * The links between the regions of `REGIONS=a,b npm run stack:up` (infra/stack-regions.sh): one
 * long-lived process holding a TCP proxy (proxy.ts) for every way one region reaches another, with
 * REGION_RTT_MS of round trip on each, and an HTTP control port on 127.0.0.1 to cut and heal the
 * link between two regions or change the round trip. It lives with the chaos proxy because it is
 * that proxy; it is a separate process because the stack outlives the shell that started it.
 *
 *   node link-main.js --control <port> --rtt <ms> <from>><to>:<listen port>:<target port> ...
 *
 * A proxy `a>b` carries connections region a opens to region b (a's gateways' forwarded writes,
 * a's MirrorMaker reading b's broker); cutting a and b cuts both directions. Control:
 *   GET  /links                 [{"from","to","listen","target","cut"}]
 *   POST /cut?a=<r>&b=<r>       cut the link between two regions (both ways); no query: every link
 *   POST /heal?a=<r>&b=<r>      heal it (with its round trip back)
 *   POST /rtt?ms=<n>            every link's round trip
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseArgs } from 'node:util';
import { TcpProxy } from './proxy.js';

interface Link {
  from: string;
  to: string;
  proxy: TcpProxy;
}

const REGION = /^[a-z][a-z0-9-]{0,31}$/;

function fail(msg: string): never {
  console.error(`link-main: ${msg}`);
  process.exit(2);
}

function port(s: string | undefined, what: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`${what} must be a port, got "${s}"`);
  return n;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { control: { type: 'string' }, rtt: { type: 'string', default: '60' } },
});
const controlPort = port(values.control, '--control');
let rttMs = Number(values.rtt);
if (!Number.isFinite(rttMs) || rttMs < 0 || rttMs > 10_000) fail(`--rtt must be 0..10000 ms, got "${values.rtt}"`);

const links: Link[] = [];
for (const spec of positionals) {
  const m = /^([^>]+)>([^:]+):(\d+):(\d+)$/.exec(spec);
  if (!m || !REGION.test(m[1]!) || !REGION.test(m[2]!)) fail(`bad link "${spec}" (want from>to:listen:target)`);
  const proxy = await TcpProxy.start(port(m[4], 'target'), port(m[3], 'listen'));
  proxy.delayMs = rttMs / 2;
  links.push({ from: m[1]!, to: m[2]!, proxy });
}
if (links.length === 0) fail('no links given');

/** The links between a and b (both ways); both absent: every link. */
function between(q: URLSearchParams): Link[] | null {
  const a = q.get('a');
  const b = q.get('b');
  if (a === null && b === null) return links;
  if (!a || !b || !REGION.test(a) || !REGION.test(b) || a === b) return null;
  return links.filter((l) => (l.from === a && l.to === b) || (l.from === b && l.to === a));
}

const describe = () =>
  links.map((l) => ({ from: l.from, to: l.to, listen: l.proxy.port, target: l.proxy.targetPort, cut: l.proxy.partitioned, rtt_ms: rttMs }));

function handle(method: string | undefined, url: URL): [number, unknown] {
  if (method === 'GET' && url.pathname === '/links') return [200, describe()];
  if (method !== 'POST') return [404, { code: 'not_found' }];
  if (url.pathname === '/rtt') {
    const ms = Number(url.searchParams.get('ms'));
    if (!Number.isFinite(ms) || ms < 0 || ms > 10_000) return [400, { code: 'invalid_request', message: 'ms: 0..10000' }];
    rttMs = ms;
    for (const l of links) if (!l.proxy.partitioned) l.proxy.delayMs = ms / 2;
    return [200, describe()];
  }
  if (url.pathname !== '/cut' && url.pathname !== '/heal') return [404, { code: 'not_found' }];
  const chosen = between(url.searchParams);
  if (chosen === null || chosen.length === 0)
    return [400, { code: 'invalid_request', message: 'a and b: two regions with a link between them (or neither)' }];
  for (const l of chosen) {
    if (url.pathname === '/cut') l.proxy.partition();
    else {
      l.proxy.heal();
      l.proxy.delayMs = rttMs / 2;
    }
  }
  return [200, describe()];
}

const control = createServer((req: IncomingMessage, res: ServerResponse) => {
  const [status, body] = handle(req.method, new URL(req.url ?? '/', 'http://link'));
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
});
control.requestTimeout = 5000;
control.headersTimeout = 5000;
control.listen(controlPort, '127.0.0.1', () => console.log(JSON.stringify({ msg: 'links up', control: controlPort, links: describe() })));
const stop = () => {
  control.close();
  void Promise.all(links.map((l) => l.proxy.close())).finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
