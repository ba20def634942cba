/** The signed-in user, kept in localStorage. */
export interface SignedIn {
  user_id: string;
  token: string;
  name: string;
}

const KEY = 'realchat.session';

export function loadSession(storage: Storage): SignedIn | null {
  try {
    const v = JSON.parse(storage.getItem(KEY) ?? 'null') as Partial<SignedIn> | null;
    return v && typeof v.user_id === 'string' && typeof v.token === 'string'
      ? { user_id: v.user_id, token: v.token, name: v.name ?? '' }
      : null;
  } catch {
    return null;
  }
}

export function saveSession(storage: Storage, s: SignedIn): void {
  storage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(storage: Storage): void {
  storage.removeItem(KEY);
}
