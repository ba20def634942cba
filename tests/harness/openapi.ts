/**
 * Checks real HTTP responses against docs/openapi.yaml: the status is documented for the operation,
 * the content type is one the response documents, the body validates against that content's schema
 * (JSON Schema 2020-12 with ajv, formats included) and documented headers are present and valid.
 */
import { request as httpRequest } from 'node:http';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import type { ValidateFunction } from 'ajv';
import { loadOpenApiDocument } from '../../gateway/openapi.js';

// CommonJS modules whose default export TypeScript (NodeNext) sees as the module object.
const Ajv2020 = _Ajv2020 as unknown as typeof _Ajv2020.default;
const addFormats = _addFormats as unknown as typeof _addFormats.default;

/** Headers on every API response (the hardening headers): checked by their own test, not per response. */
export const HARDENING_HEADERS = ['cache-control', 'x-content-type-options', 'referrer-policy'] as const;

export type Json = Record<string, any>;

export interface RawResponse {
  status: number;
  /** Lowercased names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  text: string;
}

/** One HTTP request with full control over headers (Host and Origin included). */
export function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const url = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method,
        path: url.pathname + url.search,
        headers: {
          ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}),
          ...(opts.headers ?? {}),
        },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers))
            if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
          resolve({ status: res.statusCode ?? 0, headers, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 10_000, () =>
      req.destroy(new Error(`${method} ${path}: no answer within ${opts.timeoutMs ?? 10_000} ms`)),
    );
    // The server may answer (413) before it has read an oversized body: that is not our error.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** JSON pointer token escaping (RFC 6901). */
export const ptr = (...tokens: string[]) => '#/' + tokens.map((t) => t.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/** Follows a local `#/...` JSON pointer in the document; undefined when it does not resolve. */
export function resolvePointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined;
  let cur: unknown = doc;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof cur !== 'object' || cur === null || !(key in cur)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

export interface Checked {
  operation: string;
  status: number;
  headers: Record<string, string>;
}

export class OpenApiValidator {
  readonly doc: Json;
  readonly ajv: InstanceType<typeof Ajv2020>;
  private readonly compiled = new Map<string, ValidateFunction>();
  /** Every response checked so far. */
  readonly checked: Checked[] = [];

  constructor(doc: Json = loadOpenApiDocument()) {
    this.doc = doc;
    this.ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true, validateFormats: true });
    addFormats(this.ajv);
    // The document's root is not a schema, but refs resolve against it: its top-level fields are
    // annotations to ajv (strict mode still refuses unknown keywords inside the schemas).
    for (const keyword of [
      'openapi',
      'info',
      'jsonSchemaDialect',
      'servers',
      'paths',
      'webhooks',
      'components',
      'security',
      'tags',
      'externalDocs',
    ]) {
      this.ajv.addKeyword({ keyword });
    }
    this.ajv.addSchema(doc, 'openapi.json');
  }

  /** A validator for the schema at a pointer into the document (`#/components/schemas/Envelope`). */
  schemaAt(pointer: string): ValidateFunction {
    let v = this.compiled.get(pointer);
    if (!v) {
      if (resolvePointer(this.doc, pointer) === undefined) throw new Error(`no schema at ${pointer}`);
      v = this.ajv.compile({ $ref: `openapi.json${pointer}` });
      this.compiled.set(pointer, v);
    }
    return v;
  }

  operation(method: string, template: string): Json {
    const op = this.doc.paths?.[template]?.[method.toLowerCase()];
    if (!op) throw new Error(`${method} ${template} is not in docs/openapi.yaml`);
    return op;
  }

  /** The response object for a status and the pointer it lives at (after following a $ref). */
  responseFor(method: string, template: string, status: number): { response: Json; pointer: string } | null {
    const op = this.operation(method, template);
    let pointer = ptr('paths', template, method.toLowerCase(), 'responses', String(status));
    let response: Json | undefined = op.responses?.[String(status)];
    if (!response) return null;
    for (let i = 0; i < 5 && typeof response?.$ref === 'string'; i++) {
      pointer = response.$ref;
      response = resolvePointer(this.doc, pointer) as Json | undefined;
    }
    if (!response) throw new Error(`unresolvable response $ref at ${method} ${template} ${status}`);
    return { response, pointer };
  }

  /**
   * Asserts (throws with a readable message) that a real response is what the document promises
   * for `method template`. Returns the parsed JSON body (or the text).
   */
  check(method: string, template: string, res: RawResponse): any {
    const operation = `${method.toUpperCase()} ${template}`;
    const where = `${operation} → ${res.status}`;
    const found = this.responseFor(method, template, res.status);
    if (!found) {
      const documented = Object.keys(this.operation(method, template).responses ?? {}).join(', ');
      throw new Error(`${where}: status not documented (documented: ${documented}); body: ${res.text.slice(0, 300)}`);
    }
    const { response, pointer } = found;
    let body: any = res.text;
    const content: Json | undefined = response.content;
    if (content && Object.keys(content).length > 0) {
      const contentType = res.headers['content-type'] ?? '';
      const media = contentType.split(';')[0]!.trim().toLowerCase();
      if (!(media in content))
        throw new Error(`${where}: content-type "${contentType}" is not documented (documented: ${Object.keys(content).join(', ')})`);
      if (media === 'application/json' || media.endsWith('+json')) {
        try {
          body = JSON.parse(res.text);
        } catch {
          throw new Error(`${where}: content-type is ${media} but the body is not JSON: ${res.text.slice(0, 200)}`);
        }
      }
      if (content[media]?.schema !== undefined) {
        const validate = this.schemaAt(pointer + '/' + ptr('content', media, 'schema').slice(2));
        if (!validate(body)) {
          throw new Error(
            `${where}: body does not match the documented schema: ${this.ajv.errorsText(validate.errors, { dataVar: 'body' })}\nbody: ${res.text.slice(0, 500)}`,
          );
        }
      }
    } else if (res.text.length > 0) {
      throw new Error(`${where}: documented without a body, got: ${res.text.slice(0, 200)}`);
    }
    for (const [name, raw] of Object.entries((response.headers ?? {}) as Json)) {
      const lname = name.toLowerCase();
      if ((HARDENING_HEADERS as readonly string[]).includes(lname)) continue; // see the hardening test
      let header: Json = raw;
      let hpointer = `${pointer}/headers/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (typeof header.$ref === 'string') {
        hpointer = header.$ref;
        header = resolvePointer(this.doc, hpointer) as Json;
      }
      const value = res.headers[lname];
      if (value === undefined) {
        if (header.required) throw new Error(`${where}: required header ${name} is missing`);
        continue;
      }
      this.checkHeader(where, name, value, hpointer);
    }
    this.checked.push({ operation, status: res.status, headers: res.headers });
    return body;
  }

  /** Validates a header value against the schema at `${headerPointer}/schema` (integers are parsed). */
  checkHeader(where: string, name: string, value: string, headerPointer: string): void {
    const schema = resolvePointer(this.doc, `${headerPointer}/schema`) as Json | undefined;
    if (!schema) return;
    const types = [schema.type].flat();
    const data: unknown =
      types.includes('integer') || types.includes('number') ? (/^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value) : value;
    const validate = this.schemaAt(`${headerPointer}/schema`);
    if (!validate(data))
      throw new Error(`${where}: header ${name}: "${value}" does not match the documented schema: ${this.ajv.errorsText(validate.errors)}`);
  }
}
