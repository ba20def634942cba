/** Role settings that tests share. */

/** Rate limits out of the way, for tests that stream faster than a real client may. */
export const UNLIMITED_RATES = {
  REALCHAT_SENDS_PER_S: '100000',
  REALCHAT_SEND_BURST: '100000',
  REALCHAT_FRAMES_PER_S: '100000',
  REALCHAT_FRAME_BURST: '100000',
} as const;
