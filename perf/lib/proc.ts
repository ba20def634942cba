// /proc helpers: CPU seconds and RSS of a pid, and the pid listening on a TCP port.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86_64

export interface ProcSample {
  cpu_s: number; // utime + stime
  rss_bytes: number; // VmRSS
  threads: number;
}

export function readProc(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces: fields after the last ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime 15 -> rest[11], rest[12]
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    const threads = Number(rest[17]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return { cpu_s: (utime + stime) / CLK_TCK, rss_bytes: m ? Number(m[1]) * 1024 : 0, threads };
  } catch {
    return undefined;
  }
}

function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let txt = '';
    try {
      txt = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of txt.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const local = cols[1]!;
      const st = cols[3]!;
      const p = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
      if (st === '0A' && p === port) inodes.add(cols[9]!);
    }
  }
  return inodes;
}

/** Pids holding a LISTEN socket on the port (this machine only; needs permission to read /proc/<pid>/fd). */
export function pidsListeningOn(port: number): number[] {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return [];
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${d}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link = '';
      try {
        link = readlinkSync(`/proc/${d}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1]!)) {
        out.push(Number(d));
        break;
      }
    }
  }
  return out;
}

export function machineInfo(): { cpus: number; memory_bytes: number; node: string; kernel: string; cpu_model: string } {
  let cpuModel = '';
  let kernel = '';
  try {
    cpuModel = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    /* ignore */
  }
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    /* ignore */
  }
  let mem = 0;
  try {
    mem = Number(/MemTotal:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    /* ignore */
  }
  let cpus = 0;
  try {
    cpus = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('processor')).length;
  } catch {
    /* ignore */
  }
  return { cpus, memory_bytes: mem, node: process.version, kernel, cpu_model: cpuModel };
}
