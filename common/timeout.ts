/**
 * A deadline for any promise: every network call has one. No Node imports, so the SDK (browsers)
 * shares it; the timer never keeps a Node process alive.
 */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} timed out after ${ms} ms`)), ms);
    (timer as { unref?: () => void }).unref?.();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
