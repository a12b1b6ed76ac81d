// common.mjs: what the soak and fault tests share beyond tests/server/lib.mjs:
// a server on a loopback port in 30000-39999 (the range these tests may
// use; a port taken by someone else is retried), /proc readings, and the
// check that an answer is a clean OpenAI error.
import { createServer } from 'node:net';
import { readFileSync, readdirSync } from 'node:fs';
import { startServer, sleep } from '../server/lib.mjs';

export const PORT_LO = 30000, PORT_HI = 39999;

// A port that was free a moment ago (bind and release).
export async function freePort() {
  for (let k = 0; k < 50; k++) {
    const p = PORT_LO + Math.floor(Math.random() * (PORT_HI - PORT_LO + 1));
    const ok = await new Promise((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen(p, '127.0.0.1', () => s.close(() => res(true)));
    });
    if (ok) return p;
  }
  throw new Error('no free port in 30000-39999');
}

// startServer from lib.mjs on a port of our range; the later --port wins.
export async function startServerInRange(bin, model, extra = [], opts = {}) {
  let last;
  for (let k = 0; k < 5; k++) {
    const port = await freePort();
    try {
      return await startServer(bin, model, ['--port', String(port), ...extra], opts);
    } catch (e) {
      last = e;
      if (!/cannot listen/.test(String(e))) throw e;
      await sleep(50);
    }
  }
  throw last;
}

export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? +m[1] : NaN;
}

export function openFds(pid) {
  try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return NaN; }
}

// An OpenAI error object: {"error":{"message","type","param","code"}}.
export function isErrorObject(j) {
  return !!(j && typeof j === 'object' && j.error && typeof j.error.message === 'string' && j.error.message.length &&
            typeof j.error.type === 'string' && 'param' in j.error && 'code' in j.error);
}

export function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[s.length >> 1] : NaN;
}
