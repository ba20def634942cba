import { ENGINES, GO_TARGETS, SCENARIOS, TARGETS, type Engine, type Scenario, type Target } from './types.js';

export interface Options {
  scenario: Scenario | 'compare' | 'cluster';
  target: Target;
  targets: Target[]; // compare mode
  connections: number;
  duration: number; // seconds of sending (or holding, for idle)
  rate: number; // msg/s overall
  groupRate: number; // msg/s for the group scenario in compare mode
  groupSize: number;
  senders: number; // per group (group scenario)
  payloadBytes: number;
  rampRate: number; // connections/s overall
  stormRate: number; // reconnections/s overall
  steps: number[] | undefined;
  settle: number; // s to wait at each idle step before measuring
  drain: number; // s after the last intended send
  workers: number; // 0 = auto
  sourceAddrs: number; // 0 = auto
  url: string | undefined;
  port: number | undefined;
  out: string | undefined;
  serverPids: number[];
  jwtSecret: string | undefined;
  auth: 'dev' | 'jwt';
  startServer: boolean;
  help: boolean;
  engine: Engine; // load generator workers: Node (perf/worker.ts) or Go (perf/go/loadgen)
  goProcs: number; // GOMAXPROCS of each Go worker
  // cluster scenario
  urls: string[]; // gateway base URLs
  gateways: number; // 0 = discover (stack.sh status), else base-port .. base-port+N-1
  basePort: number;
  conversations: number; // conversations carrying the message traffic (0 = auto)
  offlineMembers: number; // cluster: members added to each conversation that never connect
  jwtSecretFile: string | undefined;
  progressEvery: number; // s between progress lines while holding
  storm: boolean; // cluster: drop and reconnect every connection halfway through the hold
}

export const USAGE = `usage: perf <scenario> [options]
scenarios: idle | pairs | group | reconnect-storm | compare | cluster
  --target realchat|centrifugo|socketio|ws   (default realchat)
  --targets a,b,c           compare mode: targets to run (default all four)
  --connections N           (default 1000; max 50000, cluster 250000)
  --duration S              seconds of sending / holding (default 30; max 3600)
  --rate R                  open-loop msg/s over all senders (pairs 1000, group 10, storm 200)
  --group-rate R            group scenario rate in compare mode (default 10)
  --group-size G            members per conversation (group: default N, i.e. one group; storm: 2)
  --senders K               senders per group (group scenario, default 1)
  --payload-bytes B         padding added to each payload (default 0)
  --ramp-rate C             connections opened per second (default 2000)
  --storm-rate C            reconnections per second in the storm (default 5000)
  --steps 1000,5000,10000   idle only: measure server RSS at each level and fit bytes/connection
  --settle S                idle steps: seconds to wait before measuring each level (default 5)
  --drain S                 seconds to wait for deliveries after the last send (default 5)
  --workers W               worker processes (default: one per 12000 connections, at least 1)
  --source-addrs A          loopback source addresses 127.0.0.2.. (default: one per 10000, at least 2)
  --url URL                 target URL (realchat default http://127.0.0.1:8080; loopback only)
  --port P                  port for a peer we start (ws 8091, socketio 8092, centrifugo 8093)
  --server-pid P[,P]        pids to sample (default: found by the listening port)
  --jwt-secret S            RealChat: sign HS256 tokens locally instead of POST /v1/dev/token
  --auth dev|jwt            RealChat token source (default dev; jwt when --jwt-secret is given)
  --no-start-server         RealChat: fail instead of running npm start when nothing answers
  --out FILE                results base path (default perf/results/<scenario>-<target>-<timestamp>)
  --engine node|go          worker processes: Node (perf/worker.ts, default) or Go (perf/go/loadgen, built
                            into .cache/bin/realchat-loadgen on first use; targets realchat, ws, centrifugo)
  --go-procs P              GOMAXPROCS of each Go worker (default 1)
cluster scenario (RealChat gateways of the distributed stack, infra/stack.sh):
  --urls U1,U2,...          gateway base URLs (http://127.0.0.1:8080,...)
  --gateways N              or: N gateways on --base-port .. +N-1 (default: every gateway in stack.sh status)
  --base-port P             first gateway port (default $PORT or 8080)
  --conversations C         conversations carrying the message traffic (default min(N / group, 1000));
                            members of each are on different gateways; --group-size (default 2)
  --offline-members M       add M members to each conversation that never connect (default 0): with
                            more than REALCHAT_LARGE_ROOM_MEMBERS in all, a large room (room interest)
  --rate R                  open-loop msg/s while holding (default 100)
  --jwt-secret-file F       file with the stack's REALCHAT_JWT_SECRET (default .cache/stack/jwt-secret)
  --progress S              seconds between progress lines while holding (default 30)
  --storm                   halfway through the hold, drop every connection and reconnect them all at
                            --storm-rate per second overall (each resumes from its last sequences)
`;

export function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    scenario: 'pairs',
    target: 'realchat',
    targets: [...TARGETS],
    connections: 1000,
    duration: 30,
    rate: NaN,
    groupRate: 10,
    groupSize: NaN,
    senders: 1,
    payloadBytes: 0,
    rampRate: 2000,
    stormRate: 5000,
    steps: undefined,
    settle: 5,
    drain: 5,
    workers: 0,
    sourceAddrs: 0,
    url: undefined,
    port: undefined,
    out: undefined,
    serverPids: [],
    jwtSecret: undefined,
    auth: 'dev',
    startServer: true,
    help: false,
    engine: 'node',
    goProcs: 1,
    urls: [],
    gateways: 0,
    basePort: Number(process.env['PORT'] || 8080),
    conversations: 0,
    offlineMembers: 0,
    jwtSecretFile: undefined,
    progressEvery: 30,
    storm: false,
  };
  const pos: string[] = [];
  const num = (name: string, v: string | undefined): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < 0) throw new Error(`--${name} needs a non-negative number`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      pos.push(a);
      continue;
    }
    const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    const val = (): string | undefined => inline ?? argv[++i];
    switch (k) {
      case 'help':
      case 'h':
        o.help = true;
        break;
      case 'target': {
        const t = val() as Target;
        if (!TARGETS.includes(t)) throw new Error(`unknown target ${t}`);
        o.target = t;
        break;
      }
      case 'targets': {
        const ts = (val() ?? '').split(',').filter(Boolean) as Target[];
        for (const t of ts) if (!TARGETS.includes(t)) throw new Error(`unknown target ${t}`);
        o.targets = ts;
        break;
      }
      case 'connections':
        o.connections = Math.floor(num(k, val()));
        break;
      case 'duration':
        o.duration = num(k, val());
        break;
      case 'rate':
        o.rate = num(k, val());
        break;
      case 'group-rate':
        o.groupRate = num(k, val());
        break;
      case 'group-size':
        o.groupSize = Math.floor(num(k, val()));
        break;
      case 'senders':
        o.senders = Math.max(1, Math.floor(num(k, val())));
        break;
      case 'payload-bytes':
        o.payloadBytes = Math.floor(num(k, val()));
        break;
      case 'ramp-rate':
        o.rampRate = Math.max(1, num(k, val()));
        break;
      case 'storm-rate':
        o.stormRate = Math.max(1, num(k, val()));
        break;
      case 'steps':
        o.steps = (val() ?? '')
          .split(',')
          .filter(Boolean)
          .map((s) => Math.floor(num(k, s)))
          .sort((x, y) => x - y);
        break;
      case 'settle':
        o.settle = num(k, val());
        break;
      case 'drain':
        o.drain = num(k, val());
        break;
      case 'workers':
        o.workers = Math.floor(num(k, val()));
        break;
      case 'source-addrs':
        o.sourceAddrs = Math.floor(num(k, val()));
        break;
      case 'url':
        o.url = val();
        break;
      case 'port':
        o.port = Math.floor(num(k, val()));
        break;
      case 'out':
        o.out = val();
        break;
      case 'server-pid':
        o.serverPids = (val() ?? '')
          .split(',')
          .filter(Boolean)
          .map((s) => Math.floor(num(k, s)));
        break;
      case 'jwt-secret':
        o.jwtSecret = val();
        o.auth = 'jwt';
        break;
      case 'auth': {
        const v = val();
        if (v !== 'dev' && v !== 'jwt') throw new Error('--auth dev|jwt');
        o.auth = v;
        break;
      }
      case 'no-start-server':
        o.startServer = false;
        break;
      case 'storm':
        o.storm = true;
        break;
      case 'urls':
        o.urls = (val() ?? '')
          .split(',')
          .map((u) => u.trim())
          .filter(Boolean);
        break;
      case 'gateways':
        o.gateways = Math.floor(num(k, val()));
        break;
      case 'base-port':
        o.basePort = Math.floor(num(k, val()));
        break;
      case 'conversations':
        o.conversations = Math.floor(num(k, val()));
        break;
      case 'offline-members':
        o.offlineMembers = Math.floor(num(k, val()));
        break;
      case 'jwt-secret-file':
        o.jwtSecretFile = val();
        o.auth = 'jwt';
        break;
      case 'engine': {
        const e = val() as Engine;
        if (!ENGINES.includes(e)) throw new Error(`--engine ${ENGINES.join('|')}`);
        o.engine = e;
        break;
      }
      case 'go-procs':
        o.goProcs = Math.max(1, Math.floor(num(k, val())));
        break;
      case 'progress':
        o.progressEvery = Math.max(1, num(k, val()));
        break;
      default:
        throw new Error(`unknown option --${k}`);
    }
  }
  const sc = pos[0] ?? '';
  if (!o.help) {
    if (sc !== 'compare' && sc !== 'cluster' && !SCENARIOS.includes(sc as Scenario)) throw new Error(`unknown scenario '${sc}'`);
    o.scenario = sc as Scenario | 'compare' | 'cluster';
  }
  if (o.steps && o.steps.length > 0) o.connections = Math.max(o.connections, o.steps[o.steps.length - 1]!);
  // hard bounds: the generator must stop by itself and stay within this machine
  const maxConn = o.scenario === 'cluster' ? 250_000 : 50_000;
  if (o.connections < 1 || o.connections > maxConn)
    throw new Error(
      `--connections must be 1..${maxConn}${o.scenario === 'cluster' ? '' : ' (up to 250000 with the cluster scenario, over several gateways)'}`,
    );
  if (o.offlineMembers > 100_000) throw new Error('--offline-members must be <= 100000 (the default room size limit)');
  if (o.duration <= 0 || o.duration > 3600) throw new Error('--duration must be in (0, 3600] s');
  if (o.rate > 100_000 || o.groupRate > 100_000) throw new Error('--rate must be <= 100000 msg/s');
  if (o.engine === 'go') {
    const used = o.scenario === 'compare' ? o.targets : [o.target];
    const unsupported = used.filter((t) => !GO_TARGETS.includes(t));
    if (unsupported.length > 0)
      throw new Error(
        `--engine go does not drive ${unsupported.join(', ')} (it speaks ${GO_TARGETS.join(', ')})${o.scenario === 'compare' ? `: pass --targets ${GO_TARGETS.join(',')}` : ''}`,
      );
  }
  return o;
}

/** Options with the per-scenario defaults filled in (rate, group size). */
export function forScenario(o: Options, sc: Scenario, compare: boolean): Options {
  const r: Options = { ...o, scenario: sc };
  if (sc === 'idle') r.rate = 0;
  else if (sc === 'group') r.rate = compare || Number.isNaN(o.rate) ? o.groupRate : o.rate;
  else if (Number.isNaN(o.rate)) r.rate = sc === 'reconnect-storm' ? 200 : 1000;
  if (sc === 'group') r.groupSize = Number.isNaN(o.groupSize) ? o.connections : o.groupSize;
  else if (sc === 'pairs' || sc === 'idle') r.groupSize = 2;
  else r.groupSize = Number.isNaN(o.groupSize) ? 2 : o.groupSize;
  r.groupSize = Math.max(2, Math.min(r.groupSize, r.connections));
  return r;
}
