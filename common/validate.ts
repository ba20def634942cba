import { AppError, type ErrorCode } from './errors.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(v: unknown): v is string {
  return typeof v === 'string' && UUID_RE.test(v);
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Length in Unicode characters (code points), as documented limits mean it: an emoji is one
 * character, not two UTF-16 units. Counting stops past `max` (a long string costs no more).
 */
export function characters(s: string, max: number): number {
  if (s.length <= max) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) i++;
      }
      n++;
    }
    return n;
  }
  let n = 0;
  for (const _ of s) if (++n > max) break;
  return n;
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
    const chars = characters(v, max);
    if (chars < min || chars > max) this.fail(`${name} must be ${min}-${max} characters`);
    if (v.includes('\u0000') || !v.isWellFormed()) this.fail(`${name} must be valid text without NUL characters`);
    return v;
  }

  optionalString(name: string, min: number, max: number): string | undefined {
    return this.obj[name] === undefined || this.obj[name] === null ? undefined : this.string(name, min, max);
  }

  /** Absent: undefined; present, it must be a string (null included: it is not one). */
  stringIfPresent(name: string, min: number, max: number): string | undefined {
    return this.obj[name] === undefined ? undefined : this.string(name, min, max);
  }

  int(name: string, min: number, max: number): number {
    const v = this.obj[name];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
      this.fail(`${name} must be an integer between ${min} and ${max}`);
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

export interface PayloadLimits {
  /** Serialized (JSON) size limit. */
  maxPayloadBytes: number;
  /** Longest number, in characters of its plain decimal form. */
  maxNumberChars: number;
}

/**
 * Characters PostgreSQL prints for a number stored in jsonb (numeric, plain decimal, never an
 * exponent): "5e-324" is six characters in JSON and 326 once stored.
 */
export function plainDecimalLength(n: number): number {
  const sign = n < 0 ? 1 : 0;
  const s = String(Math.abs(n));
  const e = s.indexOf('e');
  if (e < 0) return sign + s.length;
  const mantissa = s.slice(0, e);
  const exponent = Number(s.slice(e + 1));
  const dot = mantissa.indexOf('.');
  const digits = mantissa.length - (dot < 0 ? 0 : 1);
  // Digits before the decimal point once the exponent is applied.
  const whole = (dot < 0 ? mantissa.length : dot) + exponent;
  if (whole <= 0) return sign + 2 + -whole + digits; // 0.000ddd
  if (whole >= digits) return sign + whole; // ddd000
  return sign + digits + 1; // dd.ddd
}

/**
 * Payload rules checked before anything serializes the value (JSON.stringify recurses and would
 * overflow the stack on a deeply nested payload) and before PostgreSQL sees it (jsonb would fail
 * half-way through a transaction, or silently turn 1e400 into null): bounded nesting, no NUL or lone
 * surrogates in strings and keys, finite numbers of bounded length, bounded serialized size.
 * Returns the serialized size and the size as PostgreSQL prints it (what pages are bounded by).
 */
export function checkPayload(payload: unknown, limits: PayloadLimits, code: ErrorCode): { bytes: number; storedBytes: number } {
  if (payload === undefined) throw new AppError(code, 'payload must be a JSON value');
  // Characters jsonb's text form adds: numbers in plain decimal, a space after each ',' and ':'.
  let extra = 0;
  const stack: Array<{ v: unknown; depth: number }> = [{ v: payload, depth: 0 }];
  while (stack.length) {
    const { v, depth } = stack.pop()!;
    // `depth` counts the containers around v: a container at depth 64 would be the 65th level.
    if (depth >= MAX_PAYLOAD_DEPTH && typeof v === 'object' && v !== null)
      throw new AppError(code, `payload nests deeper than ${MAX_PAYLOAD_DEPTH} levels`);
    if (typeof v === 'string') {
      if (v.includes('\u0000') || !v.isWellFormed())
        throw new AppError(code, 'payload strings must be valid Unicode without NUL characters');
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v))
        throw new AppError(code, 'payload numbers must be finite (1e400 is not a JSON number JavaScript or PostgreSQL can keep)');
      const chars = plainDecimalLength(v);
      if (chars > limits.maxNumberChars) {
        throw new AppError(
          code,
          `payload numbers may have at most ${limits.maxNumberChars} characters written out in decimal (send long or tiny numbers as strings)`,
        );
      }
      extra += chars - String(v).length;
    } else if (Array.isArray(v)) {
      extra += Math.max(0, v.length - 1);
      for (const x of v) stack.push({ v: x, depth: depth + 1 });
    } else if (isPlainObject(v)) {
      const entries = Object.entries(v);
      extra += entries.length + Math.max(0, entries.length - 1);
      for (const [k, x] of entries) {
        if (k.includes('\u0000') || !k.isWellFormed())
          throw new AppError(code, 'payload keys must be valid Unicode without NUL characters');
        stack.push({ v: x, depth: depth + 1 });
      }
    } else if (v !== null && typeof v !== 'boolean') {
      throw new AppError(code, 'payload must be a JSON value');
    }
  }
  const bytes = Buffer.byteLength(JSON.stringify(payload));
  if (bytes > limits.maxPayloadBytes)
    throw new AppError('payload_too_large', `payload is ${bytes} bytes serialized; the limit is ${limits.maxPayloadBytes}`);
  return { bytes, storedBytes: bytes + extra };
}
