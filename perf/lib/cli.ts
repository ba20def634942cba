/** `--name value` of the standalone perf scripts (not the `perf` runner's options, perf/lib/args.ts); required when no fallback. */
export function cliArg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) throw new Error(`--${name} is required`);
  return v;
}
