import { AppError, type ErrorCode } from './errors.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(v: unknown): v is string {
  return typeof v === 'string' && UUID_RE.test(v);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A field reader that raises one error code (invalid_request for REST, invalid_frame for WS). */
export class Fields {
  constructor(
    private readonly obj: Record<string, unknown>,
    private readonly code: ErrorCode,
  ) {}

  private fail(msg: string): never {
    throw new AppError(this.code, msg);
  }

  uuid(name: string): string {
    const v = this.obj[name];
    if (!isUuid(v)) this.fail(`${name} must be a UUID string`);
    return v.toLowerCase();
  }

  optionalUuid(name: string): string | undefined {
    return this.obj[name] === undefined ? undefined : this.uuid(name);
  }

  string(name: string, min: number, max: number): string {
    const v = this.obj[name];
    if (typeof v !== 'string') this.fail(`${name} must be a string`);
    if (v.length < min || v.length > max) this.fail(`${name} must be ${min}-${max} characters`);
    if (v.includes('\u0000') || !v.isWellFormed()) this.fail(`${name} must be valid text without NUL characters`);
    return v;
  }

  optionalString(name: string, min: number, max: number): string | undefined {
    return this.obj[name] === undefined || this.obj[name] === null ? undefined : this.string(name, min, max);
  }

  int(name: string, min: number, max: number): number {
    const v = this.obj[name];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) this.fail(`${name} must be an integer between ${min} and ${max}`);
    return v;
  }

  optionalInt(name: string, min: number, max: number, dflt: number): number {
    return this.obj[name] === undefined ? dflt : this.int(name, min, max);
  }

  uuidList(name: string, min: number, max: number): string[] {
    const v = this.obj[name];
    if (!Array.isArray(v)) this.fail(`${name} must be an array of UUID strings`);
    if (v.length < min || v.length > max) this.fail(`${name} must have ${min}-${max} entries`);
    const out = new Set<string>();
    for (const x of v) {
      if (!isUuid(x)) this.fail(`${name} must contain only UUID strings`);
      out.add(x.toLowerCase());
    }
    return [...out];
  }

  present(name: string): unknown {
    if (!(name in this.obj)) this.fail(`${name} is required`);
    return this.obj[name];
  }
}

export const MAX_PAYLOAD_DEPTH = 64;

/**
 * Payload rules that Postgres' jsonb would otherwise reject half-way through a transaction:
 * no NUL in strings or keys, no lone surrogates, bounded nesting. Returns the serialized size.
 */
export function checkPayload(payload: unknown, maxBytes: number, code: ErrorCode): number {
  const text = JSON.stringify(payload);
  if (text === undefined) throw new AppError(code, 'payload must be a JSON value');
  const size = Buffer.byteLength(text);
  if (size > maxBytes) throw new AppError('payload_too_large', `payload is ${size} bytes serialized; the limit is ${maxBytes}`);
  const stack: Array<{ v: unknown; depth: number }> = [{ v: payload, depth: 0 }];
  while (stack.length) {
    const { v, depth } = stack.pop()!;
    if (depth > MAX_PAYLOAD_DEPTH) throw new AppError(code, `payload nests deeper than ${MAX_PAYLOAD_DEPTH} levels`);
    if (typeof v === 'string') {
      if (v.includes('\u0000') || !v.isWellFormed()) throw new AppError(code, 'payload strings must be valid Unicode without NUL characters');
    } else if (Array.isArray(v)) {
      for (const x of v) stack.push({ v: x, depth: depth + 1 });
    } else if (isPlainObject(v)) {
      for (const [k, x] of Object.entries(v)) {
        if (k.includes('\u0000') || !k.isWellFormed()) throw new AppError(code, 'payload keys must be valid Unicode without NUL characters');
        stack.push({ v: x, depth: depth + 1 });
      }
    }
  }
  return size;
}
