/**
 * The OpenAPI 3.1 document of the REST API (docs/openapi.yaml), served as GET /v1/openapi.json.
 * The YAML file is the single source; tests/openapi-conformance.test.ts and
 * tests/schemathesis.test.ts keep it true against the running server.
 *
 * Wiring (gateway/server.ts), loaded once at start, before the catch-all route:
 *   const openapi = loadOpenApiDocument();
 *   app.get('/v1/openapi.json', route('GET /v1/openapi.json', () => ({ status: 200, body: openapi })));
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const OPENAPI_RELATIVE_PATH = join('docs', 'openapi.yaml');

/**
 * docs/openapi.yaml, found walking up from this module's directory (works from gateway/*.ts and
 * from dist/gateway/*.js), or null when there is none.
 */
export function findOpenApiFile(startDir: string = dirname(fileURLToPath(import.meta.url))): string | null {
  let dir = startDir;
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, OPENAPI_RELATIVE_PATH);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return null;
}

/** Reads and parses docs/openapi.yaml. Throws when the file is missing or is not an OpenAPI document. */
export function loadOpenApiDocument(file: string | null = findOpenApiFile()): Record<string, unknown> {
  if (file === null) {
    throw new Error(
      `${OPENAPI_RELATIVE_PATH} not found in any directory above ${dirname(fileURLToPath(import.meta.url))}: the OpenAPI document ships with the server (keep docs/ beside dist/)`,
    );
  }
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc) || typeof (doc as Record<string, unknown>).openapi !== 'string') {
    throw new Error(`${file} is not an OpenAPI document (no top-level "openapi" field)`);
  }
  return doc as Record<string, unknown>;
}
