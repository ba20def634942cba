import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Embedded mode only: a JWT secret generated once and kept in the data dir, so tokens survive
 * restarts without the user configuring anything.
 */
export async function loadOrCreateJwtSecret(dataDir: string): Promise<{ secret: string; created: boolean; path: string }> {
  const path = join(dataDir, 'jwt-secret');
  try {
    const secret = (await readFile(path, 'utf8')).trim();
    if (secret.length >= 32) return { secret, created: false, path };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(dataDir, { recursive: true });
  const secret = randomBytes(48).toString('base64url');
  await writeFile(path, secret + '\n', { mode: 0o600 });
  return { secret, created: true, path };
}

/**
 * Embedded mode only: a VAPID key pair (Web Push) generated once and kept in the data dir, like the
 * JWT secret: browsers subscribe against the public key, so it must survive restarts.
 */
export async function loadOrCreateVapidKeys(
  dataDir: string,
  generate: () => { publicKey: string; privateKey: string },
): Promise<{ keys: { publicKey: string; privateKey: string }; created: boolean; path: string }> {
  const path = join(dataDir, 'vapid-keys.json');
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as { publicKey?: unknown; privateKey?: unknown };
    if (typeof parsed.publicKey === 'string' && typeof parsed.privateKey === 'string')
      return { keys: { publicKey: parsed.publicKey, privateKey: parsed.privateKey }, created: false, path };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err;
  }
  await mkdir(dataDir, { recursive: true });
  const keys = generate();
  await writeFile(path, `${JSON.stringify(keys)}\n`, { mode: 0o600 });
  return { keys, created: true, path };
}
