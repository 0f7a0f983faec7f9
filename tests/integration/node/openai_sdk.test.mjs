// Integration tests of the Krasis gateway with the official OpenAI Node SDK and
// with raw HTTP. They start the real cluster (`krasis serve`: loader, prefill,
// decode and gateway on loopback) on the built-in demo model, drive it the way
// an OpenAI client does and check what comes back: shapes, usage, streaming,
// stop strings, seeds, the prefix cache, cancellation, logprobs, errors, auth
// and tool calls (on a scripted model made by build/bin/make_scripted_model).
//
//   scripts/fetch_node_deps            # once: installs the pinned SDK (npm ci)
//   KRASIS_BIN_DIR=build/bin node --test tests/integration/node/openai_sdk.test.mjs
//
// Environment: KRASIS_BIN_DIR (default <repo>/build/bin), KRASIS_SOURCE_DIR
// (default: the repository this file sits in).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SOURCE_DIR = path.resolve(process.env.KRASIS_SOURCE_DIR || path.join(HERE, '..', '..', '..'));
const BIN_DIR = path.resolve(process.env.KRASIS_BIN_DIR || path.join(SOURCE_DIR, 'build', 'bin'));
const DEMO_MODEL = path.join(SOURCE_DIR, 'models', 'demo');
const SETPRIV = '/usr/bin/setpriv';

// The SDK must be installed: a missing SDK is a broken setup, not a skip.
let OpenAI;
try {
  ({ default: OpenAI } = await import('openai'));
} catch (e) {
  throw new Error(
    `the OpenAI Node SDK is not installed in ${path.join(HERE, 'node_modules')} ` +
      `(${e.code || e.message}): run scripts/fetch_node_deps`,
  );
}


// ---------------------------------------------------------------------------
// Processes: every process group we start is killed on the way out, whatever
// happens to the tests.

const liveGroups = new Set();
const scratchDirs = new Set();
function killAllGroups() {
  if (liveGroups.size === 0) return;
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
  }
  liveGroups.clear();
  // Let the killed services go before their folders are removed (synchronously:
  // this runs in 'exit' and signal handlers).
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
}
function removeScratchDirs() {
  for (const dir of scratchDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch {}
  }
  scratchDirs.clear();
}
function makeScratchDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  scratchDirs.add(dir);
  return dir;
}
function removeScratchDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
  scratchDirs.delete(dir);
}
process.on('exit', () => {
  killAllGroups();
  removeScratchDirs();
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAllGroups();
    removeScratchDirs();
    process.exit(130);
  });
}

const T0 = Date.now();
// KRASIS_TEST_TRACE=1 prints the cluster lifecycle with timestamps on stderr.
const trace = (msg) => {
  if (process.env.KRASIS_TEST_TRACE) process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(2)}s] ${msg}\n`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A deadline for Promise.race that does not keep the process alive on its own.
const timeLimit = (ms) => new Promise((r) => setTimeout(r, ms).unref()).then(() => null);

function spawnGroup(exe, args) {
  if (!fs.existsSync(exe)) throw new Error(`${exe} is missing: build it (scripts/build) or set KRASIS_BIN_DIR`);
  // Its own process group, so that this test can kill all of it; and, where
  // util-linux's setpriv exists, a parent-death signal, so that it dies with
  // this process even when the test runner SIGKILLs us (the launcher's own
  // children already die with the launcher).
  const [cmd, argv] = fs.existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', 'KILL', '--', exe, ...args]] : [exe, args];
  const child = spawn(cmd, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  liveGroups.add(child.pid);
  let log = '';
  const keep = (d) => {
    log += d.toString();
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, exited, log: () => log };
}

// SIGTERM, wait for a clean exit, SIGKILL the group if it does not come.
async function stopGroup(proc, timeoutMs = 20_000) {
  if (!proc) return null;
  const { child, exited } = proc;
  trace(`stopping pid ${child.pid}`);
  if (child.exitCode === null && child.signalCode === null) {
    try {
      child.kill('SIGTERM');
    } catch {}
  }
  const result = await Promise.race([exited, timeLimit(timeoutMs)]);
  try {
    process.kill(-child.pid, 'SIGKILL'); // stragglers of the group, if any
  } catch {}
  liveGroups.delete(child.pid);
  trace(`pid ${child.pid} stopped: ${JSON.stringify(result)}`);
  return result;
}

async function waitFor(what, fn, timeoutMs, proc) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (proc && (proc.child.exitCode !== null || proc.child.signalCode !== null)) {
      throw new Error(`${what}: the process exited (${proc.child.exitCode ?? proc.child.signalCode}).\n${proc.log()}`);
    }
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (${last.message})` : ''}\n${proc ? proc.log() : ''}`);
}

// Starts `krasis serve` on `modelDir`; resolves once /health answers 200.
async function startCluster(modelDir) {
  const home = makeScratchDir('krasis-node-');
  let proc;
  try {
    proc = spawnGroup(path.join(BIN_DIR, 'krasis'), [
      'serve', '--model', modelDir, '--port', '0', '--grpc-port', '0', '--kv-budget-mb', '64', '--home', home,
    ]);
  } catch (e) {
    removeScratchDir(home);
    throw e;
  }
  const cluster = { home, proc, async stop() {
    const r = await stopGroup(proc);
    removeScratchDir(home);
    return r;
  } };
  try {
    const serverFile = path.join(home, 'servers', `${proc.child.pid}.json`);
    const info = await waitFor('the launcher\'s server file', () => {
      if (!fs.existsSync(serverFile)) return null;
      return JSON.parse(fs.readFileSync(serverFile, 'utf8'));
    }, 90_000, proc);
    assert.equal(info.pid, proc.child.pid);
    assert.match(info.base_url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    assert.equal(info.base_url, `http://${info.http_address}/v1`);
    cluster.info = info;
    cluster.baseURL = info.base_url;
    cluster.http = `http://${info.http_address}`;
    trace(`cluster ${proc.child.pid} wrote its server file: ${info.base_url}`);
    await waitFor('GET /health == 200', async () => (await fetch(`${cluster.http}/health`)).status === 200, 60_000, proc);
    trace(`cluster ${proc.child.pid} is healthy`);
    return cluster;
  } catch (e) {
    await cluster.stop();
    throw e;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// HTTP helpers.

async function postJson(base, p, body, headers = {}) {
  const res = await fetch(base + p, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, json };
}

// Asserts an OpenAI error: exact status and {error: {message, type, param, code}}.
function assertOpenAiError(res, { status, type = 'invalid_request_error', param = null, code = null, message }) {
  assert.equal(res.status, status, `HTTP status (body: ${res.text})`);
  assert.match(res.headers.get('content-type') || '', /^application\/json/, 'error content-type');
  assert.ok(res.json, `error body is JSON: ${res.text}`);
  assert.deepEqual(Object.keys(res.json), ['error'], `top-level keys: ${res.text}`);
  const e = res.json.error;
  assert.deepEqual(Object.keys(e).sort(), ['code', 'message', 'param', 'type'], `error keys: ${res.text}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0, 'error.message is empty');
  assert.equal(e.type, type, `error.type (${res.text})`);
  assert.equal(e.param, param, `error.param (${res.text})`);
  assert.equal(e.code, code, `error.code (${res.text})`);
  if (message) assert.match(e.message, message);
}

// One raw HTTP/1.1 exchange over a socket: `head` (without the blank line),
// then `body` chunks; returns {status, headers, body} of the response. Writing
// errors (the server closing early, e.g. after 413) are ignored.
function rawExchange(address, head, bodyChunks = []) {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    const chunks = [];
    sock.setTimeout(30_000, () => sock.destroy(new Error('raw exchange timed out')));
    sock.on('error', (e) => {
      if (chunks.length === 0 && e.code !== 'EPIPE' && e.code !== 'ECONNRESET') reject(e);
    });
    sock.on('data', (d) => chunks.push(d));
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.1 (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(text);
      if (!m) return reject(new Error(`no HTTP response: ${JSON.stringify(text.slice(0, 300))}`));
      const headers = new Map();
      for (const line of m[2].split('\r\n')) {
        const i = line.indexOf(':');
        headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
      }
      let body = m[3];
      const len = headers.get('content-length');
      if (len !== undefined) body = Buffer.from(body).subarray(0, Number(len)).toString('utf8');
      resolve({ status: Number(m[1]), headers, body });
    });
    sock.on('connect', async () => {
      sock.write(`${head}\r\n\r\n`);
      for (const c of bodyChunks) {
        if (sock.destroyed) break;
        const ok = sock.write(c);
        if (!ok) await new Promise((r) => sock.once('drain', r).once('close', r));
      }
    });
  });
}

// Prometheus text -> Map of "name{labels}" -> value.
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${JSON.stringify(line)}`);
    out.set(m[1], Number(m[2]));
  }
  return out;
}

async function metrics(cluster) {
  const res = await fetch(`${cluster.http}/metrics`);
  assert.equal(res.status, 200);
  return { contentType: res.headers.get('content-type'), text: await res.text() };
}

async function metricValue(cluster, key) {
  return parseMetrics((await metrics(cluster)).text).get(key) ?? 0;
}

// GPT-2 byte-level BPE spelling of a string (how tokenizer.json's vocab keys are written).
function byteLevel(text) {
  const printable = [];
  for (let b = 0; b < 256; ++b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) printable.push(b);
  }
  const map = new Map(printable.map((b) => [b, String.fromCharCode(b)]));
  let n = 0;
  for (let b = 0; b < 256; ++b) if (!map.has(b)) map.set(b, String.fromCharCode(256 + n++));
  return [...Buffer.from(text, 'utf8')].map((b) => map.get(b)).join('');
}

// Collects an SDK chat stream.
async function collectChatStream(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  return { chunks, content };
}

// ---------------------------------------------------------------------------
// The demo-model cluster, shared by everything below but the tool-call tests.

let demo;
let client;
const USER = [{ role: 'user', content: 'Write a function.' }];

before(async () => {
  assert.ok(fs.existsSync(path.join(DEMO_MODEL, 'config.json')), `no demo model at ${DEMO_MODEL}`);
  trace('starting the demo cluster');
  demo = await startCluster(DEMO_MODEL);
  client = new OpenAI({ baseURL: demo.baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  if (!demo) return;
  const r = await demo.stop();
  demo = null;
  // The launcher stops its children and exits 0 on SIGTERM.
  assert.deepEqual(r, { code: 0, signal: null }, 'krasis serve did not exit cleanly on SIGTERM');
});

describe('chat completions (SDK)', () => {
  test('non-streaming: message, finish_reason, usage, ids', async () => {
    const r = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 8, temperature: 0 });
    assert.match(r.id, /^chatcmpl-\S+$/);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.model, 'demo');
    assert.ok(Number.isInteger(r.created) && r.created > 1_600_000_000, `created ${r.created}`);
    assert.equal(r.choices.length, 1);
    const [c] = r.choices;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content.length > 0, 'empty content');
    assert.equal(c.logprobs, null);
    assert.ok(['length', 'stop'].includes(c.finish_reason), c.finish_reason);
    const u = r.usage;
    assert.ok(u.prompt_tokens > 0);
    if (c.finish_reason === 'length') assert.equal(u.completion_tokens, 8);
    else assert.ok(u.completion_tokens > 0 && u.completion_tokens < 8);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    assert.equal(typeof u.prompt_tokens_details.cached_tokens, 'number');
    // Usage is deterministic: the same request costs the same.
    const again = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 8, temperature: 0 });
    assert.equal(again.choices[0].message.content, c.message.content, 'greedy decoding is not deterministic');
    assert.equal(again.usage.prompt_tokens, u.prompt_tokens);
    assert.notEqual(again.id, r.id, 'ids must be unique');
  });

  test('max_completion_tokens is honoured like max_tokens', async () => {
    const r = await client.chat.completions.create({
      model: 'demo', messages: USER, max_completion_tokens: 3, temperature: 0, ignore_eos: true,
    });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 3);
  });

  test('streaming equals non-streaming greedy output; chunk protocol', async () => {
    const body = { model: 'demo', messages: USER, max_tokens: 12, temperature: 0 };
    const whole = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const { chunks, content } = await collectChatStream(stream);
    assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
    const first = chunks[0];
    assert.equal(first.object, 'chat.completion.chunk');
    assert.equal(first.choices[0].delta.role, 'assistant');
    for (const ch of chunks) {
      assert.equal(ch.id, first.id, 'every chunk carries the same id');
      assert.equal(ch.object, 'chat.completion.chunk');
      assert.equal(ch.model, 'demo');
      assert.equal(ch.created, first.created);
    }
    assert.equal(content, whole.choices[0].message.content, 'streamed text differs from non-streamed text');
    const finals = chunks.filter((ch) => ch.choices.length > 0 && ch.choices[0].finish_reason !== null);
    assert.equal(finals.length, 1, 'exactly one chunk has a finish_reason');
    assert.equal(finals[0].choices[0].finish_reason, whole.choices[0].finish_reason);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], 'the usage chunk has no choices');
    assert.deepEqual(last.usage, whole.usage, 'streamed usage differs from non-streamed usage');
    for (const ch of chunks.slice(0, -1)) assert.equal(ch.usage, null, 'only the last chunk carries usage');
    // The finish chunk comes right before the usage chunk.
    assert.equal(chunks.indexOf(finals[0]), chunks.length - 2);
  });

  test('streaming without include_usage sends no usage chunk', async () => {
    const stream = await client.chat.completions.create({
      model: 'demo', messages: USER, max_tokens: 4, temperature: 0, stream: true,
    });
    const { chunks } = await collectChatStream(stream);
    assert.ok(chunks.every((c) => c.choices.length === 1), 'a chunk without choices');
    assert.ok(chunks.every((c) => c.usage === undefined || c.usage === null));
    assert.equal(chunks.at(-1).choices[0].finish_reason !== null, true);
  });

  test('parallel streams are independent and match sequential greedy output', async () => {
    const prompts = ['Write a function.', 'Read the file.', 'Parse the arguments.'];
    const body = (p) => ({ model: 'demo', messages: [{ role: 'user', content: p }], max_tokens: 10, temperature: 0 });
    const sequential = [];
    for (const p of prompts) sequential.push((await client.chat.completions.create(body(p))).choices[0].message.content);
    const parallel = await Promise.all(prompts.map(async (p) => {
      const s = await client.chat.completions.create({ ...body(p), stream: true });
      return collectChatStream(s);
    }));
    const ids = new Set(parallel.map((r) => r.chunks[0].id));
    assert.equal(ids.size, prompts.length, 'parallel streams share an id');
    parallel.forEach((r, i) => {
      assert.ok(r.chunks.every((c) => c.id === r.chunks[0].id));
      assert.equal(r.content, sequential[i], `stream ${i} ('${prompts[i]}') differs from its sequential run`);
    });
  });
});

// ---------------------------------------------------------------------------

describe('completions (SDK)', () => {
  // Token ids of "def add" in the demo tokenizer (byte-level BPE: "Ġ" is a space).
  let defAdd;
  before(() => {
    const vocab = JSON.parse(fs.readFileSync(path.join(DEMO_MODEL, 'tokenizer.json'), 'utf8')).model.vocab;
    defAdd = [vocab.def, vocab['Ġadd']];
    assert.ok(defAdd.every(Number.isInteger), 'the demo vocabulary lacks "def" or "Ġadd"');
  });

  test('string prompt: shape, usage, streaming equals non-streaming', async () => {
    const body = { model: 'demo', prompt: 'def add', max_tokens: 6, temperature: 0 };
    const r = await client.completions.create(body);
    assert.match(r.id, /^cmpl-\S+$/);
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, 'demo');
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.index, 0);
    assert.equal(typeof c.text, 'string');
    assert.ok(c.text.length > 0);
    assert.ok(['length', 'stop'].includes(c.finish_reason));
    assert.equal(r.usage.prompt_tokens, 2, '"def add" is two tokens');
    if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, 6);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);

    const stream = await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    for (const ch of chunks) {
      assert.equal(ch.object, 'text_completion');
      assert.equal(ch.id, chunks[0].id);
    }
    const text = chunks.map((ch) => ch.choices[0]?.text ?? '').join('');
    assert.equal(text, c.text, 'streamed completion differs');
    const finals = chunks.filter((ch) => ch.choices.length && ch.choices[0].finish_reason !== null);
    assert.equal(finals.length, 1);
    assert.equal(finals[0].choices[0].finish_reason, c.finish_reason);
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.deepEqual(chunks.at(-1).usage, r.usage);
  });

  test('token-id prompt equals the same text as a string prompt', async () => {
    const byText = await client.completions.create({ model: 'demo', prompt: 'def add', max_tokens: 6, temperature: 0 });
    const byIds = await client.completions.create({ model: 'demo', prompt: defAdd, max_tokens: 6, temperature: 0 });
    assert.equal(byIds.usage.prompt_tokens, 2);
    assert.equal(byIds.choices[0].text, byText.choices[0].text);
    const stream = await client.completions.create({ model: 'demo', prompt: defAdd, max_tokens: 6, temperature: 0, stream: true });
    let text = '';
    for await (const ch of stream) text += ch.choices[0]?.text ?? '';
    assert.equal(text, byText.choices[0].text);
  });

  test('a batch of one token-id array ([[ids]]) is one prompt', async () => {
    const byIds = await client.completions.create({ model: 'demo', prompt: defAdd, max_tokens: 4, temperature: 0 });
    const nested = await client.completions.create({ model: 'demo', prompt: [defAdd], max_tokens: 4, temperature: 0 });
    assert.equal(nested.choices[0].text, byIds.choices[0].text);
  });

  test('echo prepends the prompt (string and token ids, streamed and not)', async () => {
    const plain = await client.completions.create({ model: 'demo', prompt: 'def add', max_tokens: 5, temperature: 0 });
    for (const prompt of ['def add', defAdd]) {
      const r = await client.completions.create({ model: 'demo', prompt, max_tokens: 5, temperature: 0, echo: true });
      assert.equal(r.choices[0].text, 'def add' + plain.choices[0].text, `echo of ${JSON.stringify(prompt)}`);
      assert.equal(r.usage.completion_tokens, plain.usage.completion_tokens, 'echo must not count as completion');
      const stream = await client.completions.create({ model: 'demo', prompt, max_tokens: 5, temperature: 0, echo: true, stream: true });
      const parts = [];
      for await (const ch of stream) parts.push(ch.choices[0]?.text ?? '');
      assert.equal(parts[0], 'def add', 'the first streamed chunk is the echoed prompt');
      assert.equal(parts.join(''), 'def add' + plain.choices[0].text);
    }
  });

  test('completions logprobs: N returns OpenAI\'s logprobs object', async () => {
    const r = await client.completions.create({ model: 'demo', prompt: 'def add', max_tokens: 3, temperature: 0, logprobs: 2 });
    const lp = r.choices[0].logprobs;
    assert.ok(lp, 'choices[0].logprobs is null');
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.top_logprobs.length, lp.tokens.length);
    assert.equal(lp.text_offset.length, lp.tokens.length);
    assert.equal(lp.tokens.join(''), r.choices[0].text);
  });
});

// ---------------------------------------------------------------------------

describe('stop strings across token boundaries', () => {
  let base; // greedy reference: text, tokens (from logprobs)
  let stop; // a stop string that straddles two tokens
  let expected; // the text before it
  const body = { model: 'demo', messages: USER, max_tokens: 40, temperature: 0 };

  before(async () => {
    const r = await client.chat.completions.create({ ...body, logprobs: true });
    const text = r.choices[0].message.content;
    const tokens = r.choices[0].logprobs.content.map((t) => t.token);
    assert.equal(tokens.join(''), text, 'logprob tokens do not spell the content');
    // Boundaries where the last two characters of one token and the first two of
    // the next make a string whose first occurrence in the text is exactly there.
    const candidates = [];
    let offset = 0;
    for (let i = 0; i + 1 < tokens.length; ++i) {
      offset += tokens[i].length;
      const a = tokens[i];
      const b = tokens[i + 1];
      if (a.length < 2 || b.length < 2) continue;
      const s = a.slice(-2) + b.slice(0, 2);
      if (!/[A-Za-z]/.test(s) || text.indexOf(s) !== offset - 2 || offset - 2 < 1) continue;
      candidates.push({ s, at: offset - 2 });
    }
    assert.ok(candidates.length > 0, `no token boundary usable for a stop string in ${JSON.stringify(tokens)}`);
    const pick = candidates[Math.floor(candidates.length / 2)];
    stop = pick.s;
    expected = text.slice(0, pick.at);
    base = { text, tokens };
  });

  test('non-streaming: output is the text before the stop string, finish_reason stop', async () => {
    const r = await client.chat.completions.create({ ...body, stop: [stop] });
    assert.equal(r.choices[0].message.content, expected, `stop ${JSON.stringify(stop)} in ${JSON.stringify(base.text)}`);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(!r.choices[0].message.content.includes(stop));
    assert.ok(r.usage.completion_tokens < base.tokens.length, 'generation did not stop early');
    // A string stop works like a one-element array, and a non-matching extra stop changes nothing.
    const r2 = await client.chat.completions.create({ ...body, stop });
    assert.equal(r2.choices[0].message.content, expected);
    const r3 = await client.chat.completions.create({ ...body, stop: ['@@never@@', stop] });
    assert.equal(r3.choices[0].message.content, expected);
    assert.equal(r3.choices[0].finish_reason, 'stop');
  });

  test('streaming: never emits any part of the stop string', async () => {
    const stream = await client.chat.completions.create({
      ...body, stop: [stop], stream: true, stream_options: { include_usage: true },
    });
    let sofar = '';
    const finishes = [];
    let usage;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      if (!ch.choices.length) continue;
      sofar += ch.choices[0].delta.content ?? '';
      // The running text must always be a prefix of the expected output: the
      // server holds back a possible stop-string prefix instead of sending it.
      assert.ok(expected.startsWith(sofar), `streamed ${JSON.stringify(sofar)} is not a prefix of ${JSON.stringify(expected)}`);
      if (ch.choices[0].finish_reason) finishes.push(ch.choices[0].finish_reason);
    }
    assert.equal(sofar, expected);
    assert.deepEqual(finishes, ['stop']);
    assert.ok(usage && usage.completion_tokens < base.tokens.length);
  });

  test('completions honour stop strings too', async () => {
    const ref = await client.completions.create({ model: 'demo', prompt: 'def add', max_tokens: 20, temperature: 0 });
    const text = ref.choices[0].text;
    // A 3-character piece from the middle (containing a letter) that first occurs there.
    let at = -1;
    for (let i = Math.floor(text.length / 2); i + 3 <= text.length; ++i) {
      const s = text.slice(i, i + 3);
      if (/[A-Za-z]/.test(s) && text.indexOf(s) === i) {
        at = i;
        break;
      }
    }
    assert.ok(at > 0, `no usable stop string in ${JSON.stringify(text)}`);
    const s = text.slice(at, at + 3);
    const r = await client.completions.create({ model: 'demo', prompt: 'def add', max_tokens: 20, temperature: 0, stop: s });
    assert.equal(r.choices[0].text, text.slice(0, at));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });
});

// ---------------------------------------------------------------------------

describe('sampling', () => {
  const body = { model: 'demo', messages: USER, max_tokens: 12, temperature: 1.0 };

  test('the same seed reproduces; different seeds differ', async () => {
    const a = await client.chat.completions.create({ ...body, seed: 1234 });
    const b = await client.chat.completions.create({ ...body, seed: 1234 });
    assert.equal(b.choices[0].message.content, a.choices[0].message.content, 'seed 1234 did not reproduce');
    const others = [];
    for (const seed of [1, 2, 3, 4, 5]) {
      others.push((await client.chat.completions.create({ ...body, seed })).choices[0].message.content);
    }
    assert.ok(others.some((t) => t !== a.choices[0].message.content), 'five other seeds all gave the same text');
    // Streaming with the same seed samples the same tokens.
    const s = await client.chat.completions.create({ ...body, seed: 1234, stream: true });
    assert.equal((await collectChatStream(s)).content, a.choices[0].message.content);
  });

  test('logit_bias steers greedy decoding', async () => {
    const ref = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
    const first = ref.choices[0].logprobs.content[0];
    assert.ok(first.top_logprobs.length === 2);
    // Banning the greedy first token makes the runner-up come first.
    const vocab = JSON.parse(fs.readFileSync(path.join(DEMO_MODEL, 'tokenizer.json'), 'utf8')).model.vocab;
    const id = vocab[byteLevel(first.token)];
    assert.ok(Number.isInteger(id), `token ${JSON.stringify(first.token)} not found in the vocabulary`);
    const r = await client.chat.completions.create({
      model: 'demo', messages: USER, max_tokens: 4, temperature: 0, logprobs: true, logit_bias: { [id]: -100 },
    });
    assert.equal(r.choices[0].logprobs.content[0].token, first.top_logprobs[1].token);
  });
});

// ---------------------------------------------------------------------------

describe('prefix cache', () => {
  test('a follow-up turn reports cached prompt tokens', async () => {
    const messages = [
      { role: 'system', content: 'You are a careful assistant who writes small, well documented Python functions with type hints and tests.' },
      { role: 'user', content: 'Write a function that adds two numbers and returns the result, with a docstring.' },
    ];
    const first = await client.chat.completions.create({ model: 'demo', messages, max_tokens: 16, temperature: 0 });
    assert.ok(first.usage.prompt_tokens >= 40, `prompt of ${first.usage.prompt_tokens} tokens is too short for a cache block`);
    const followUp = [...messages, { role: 'assistant', content: first.choices[0].message.content }, { role: 'user', content: 'Now make it multiply.' }];
    const second = await client.chat.completions.create({ model: 'demo', messages: followUp, max_tokens: 4, temperature: 0 });
    const cached = second.usage.prompt_tokens_details.cached_tokens;
    assert.ok(cached > 0, `cached_tokens is ${cached}`);
    assert.ok(cached < second.usage.prompt_tokens, `cached ${cached} of ${second.usage.prompt_tokens}`);
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens);
    // Streamed usage reports it too.
    const s = await client.chat.completions.create({
      model: 'demo', messages: followUp, max_tokens: 2, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    const { chunks } = await collectChatStream(s);
    assert.ok(chunks.at(-1).usage.prompt_tokens_details.cached_tokens > 0);
  });
});

// ---------------------------------------------------------------------------

describe('cancellation', () => {
  test('aborting a stream cancels the request; the server keeps serving', async () => {
    // The demo decodes thousands of tokens/s: on a busy machine the server may
    // write the whole answer into the socket buffers before the client's abort
    // reaches it, and then it rightly counts a 200. Such a run says nothing
    // about cancellation, so it is tried again (up to five times).
    const m499 = 'krasis_requests_total{endpoint="chat",status="499"}';
    const m200 = 'krasis_requests_total{endpoint="chat",status="200"}';
    let cancelled = false;
    for (let attempt = 0; attempt < 5 && !cancelled; ++attempt) {
      const before499 = await metricValue(demo, m499);
      const before200 = await metricValue(demo, m200);
      const ac = new AbortController();
      const stream = await client.chat.completions.create(
        { model: 'demo', messages: USER, max_tokens: 1500, temperature: 1, ignore_eos: true, stream: true },
        { signal: ac.signal },
      );
      let n = 0;
      let finish = null;
      try {
        for await (const ch of stream) {
          if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
          if (++n === 3) ac.abort();
        }
      } catch (e) {
        assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', `unexpected error ${e}`);
      }
      assert.ok(n >= 3, `${n} chunks arrived`);
      // The gateway ends the request one way or the other: a 499 when it saw
      // the closed connection, a 200 when it had already sent everything.
      await waitFor('the aborted request to be counted', async () =>
        (await metricValue(demo, m499)) > before499 || (await metricValue(demo, m200)) > before200, 15_000);
      if ((await metricValue(demo, m499)) > before499) {
        cancelled = true;
        assert.equal(finish, null, 'a cancelled stream carried a finish_reason');
      }
    }
    assert.ok(cancelled, 'in five tries the server always finished before the abort reached it');
    await waitFor('krasis_queue_depth to drop to 0', async () => (await metricValue(demo, 'krasis_queue_depth')) === 0, 15_000);
    // And it still serves.
    const r = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 3, temperature: 0 });
    assert.ok(r.choices[0].message.content.length > 0);
  });
});

// ---------------------------------------------------------------------------

describe('logprobs', () => {
  test('chat logprobs and top_logprobs are well-formed', async () => {
    const r = await client.chat.completions.create({
      model: 'demo', messages: USER, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3,
    });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    assert.equal(content.map((t) => t.token).join(''), r.choices[0].message.content);
    for (const t of content) {
      assert.equal(typeof t.token, 'string');
      assert.ok(Number.isFinite(t.logprob) && t.logprob <= 0, `logprob ${t.logprob}`);
      assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
      assert.equal(t.top_logprobs.length, 3);
      for (let i = 0; i < 3; ++i) {
        const alt = t.top_logprobs[i];
        assert.equal(typeof alt.token, 'string');
        assert.ok(Number.isFinite(alt.logprob) && alt.logprob <= 0);
        assert.deepEqual(alt.bytes, [...Buffer.from(alt.token, 'utf8')]);
        if (i > 0) assert.ok(alt.logprob <= t.top_logprobs[i - 1].logprob, 'top_logprobs not sorted');
      }
      assert.equal(new Set(t.top_logprobs.map((a) => a.token)).size, 3, 'duplicate alternatives');
      // Greedy: the chosen token is the most likely one.
      assert.equal(t.token, t.top_logprobs[0].token);
      assert.ok(Math.abs(t.logprob - t.top_logprobs[0].logprob) < 1e-5);
      // Probabilities of the alternatives sum to at most 1.
      assert.ok(t.top_logprobs.reduce((s, a) => s + Math.exp(a.logprob), 0) <= 1 + 1e-4);
    }
    // logprobs without top_logprobs: empty alternatives; no logprobs: null.
    const plain = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 3, temperature: 0, logprobs: true });
    assert.ok(plain.choices[0].logprobs.content.every((t) => Array.isArray(t.top_logprobs) && t.top_logprobs.length === 0));
    const none = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 3, temperature: 0, logprobs: false });
    assert.equal(none.choices[0].logprobs, null);
  });

  test('streamed logprobs match the non-streamed ones', async () => {
    const body = { model: 'demo', messages: USER, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2 };
    const whole = await client.chat.completions.create(body);
    const { chunks } = await collectChatStream(await client.chat.completions.create({ ...body, stream: true }));
    const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    assert.equal(streamed.length, whole.choices[0].logprobs.content.length);
    streamed.forEach((t, i) => {
      const w = whole.choices[0].logprobs.content[i];
      assert.equal(t.token, w.token);
      assert.ok(Math.abs(t.logprob - w.logprob) < 1e-5);
      assert.deepEqual(t.top_logprobs.map((a) => a.token), w.top_logprobs.map((a) => a.token));
    });
  });
});

// ---------------------------------------------------------------------------

describe('models, health, metrics, CORS', () => {
  test('models.list() lists exactly demo', async () => {
    const page = await client.models.list();
    const ids = [];
    for await (const m of page) {
      ids.push(m.id);
      assert.equal(m.object, 'model');
      assert.equal(typeof m.owned_by, 'string');
      assert.equal(typeof m.created, 'number');
    }
    assert.deepEqual(ids, ['demo']);
    const raw = await fetch(`${demo.baseURL}/models`);
    assert.equal(raw.status, 200);
    const j = await raw.json();
    assert.equal(j.object, 'list');
    assert.equal(j.data[0].max_model_len, 2048);
  });

  test('GET /health answers 200 with JSON', async () => {
    const res = await fetch(`${demo.http}/health`);
    assert.equal(res.status, 200);
    const j = await res.json();
    assert.equal(j.status, 'ok');
    assert.equal(j.model, 'demo');
  });

  test('GET /metrics is Prometheus text with krasis_requests_total', async () => {
    await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 2, temperature: 0 });
    await client.completions.create({ model: 'demo', prompt: 'def', max_tokens: 2, temperature: 0 });
    const { contentType, text } = await metrics(demo);
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    assert.match(text, /^# HELP krasis_requests_total .+$/m);
    assert.match(text, /^# TYPE krasis_requests_total counter$/m);
    const m = parseMetrics(text);
    assert.ok(m.get('krasis_requests_total{endpoint="chat",status="200"}') > 0);
    assert.ok(m.get('krasis_requests_total{endpoint="completions",status="200"}') > 0);
    assert.ok(m.get('krasis_generated_tokens_total') > 0);
    assert.ok(m.get('krasis_prompt_tokens_total') > 0);
    assert.match(text, /^# TYPE krasis_time_to_first_token_seconds histogram$/m);
    assert.ok(m.has('krasis_time_to_first_token_seconds_bucket{le="+Inf"}'));
    assert.equal(m.get('krasis_time_to_first_token_seconds_bucket{le="+Inf"}'), m.get('krasis_time_to_first_token_seconds_count'));
  });

  test('CORS preflight answers 204 with Allow-Origin and Allow-Methods', async () => {
    const res = await fetch(`${demo.http}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://example.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type, authorization' },
    });
    assert.equal(res.status, 204);
    assert.ok(res.headers.get('access-control-allow-origin'));
    assert.match(res.headers.get('access-control-allow-methods'), /POST/);
    assert.match(res.headers.get('access-control-allow-headers').toLowerCase(), /authorization/);
  });
});

// ---------------------------------------------------------------------------

describe('SDK error mapping', () => {
  test('unknown model -> NotFoundError with code model_not_found', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: USER }), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, `${e}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.equal(e.param, 'model');
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
  });

  test('context_length_exceeded -> BadRequestError', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 5000 }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${e}`);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'context_length_exceeded');
      assert.match(e.message, /maximum context length is 2048 tokens/);
      return true;
    });
  });
});

// ---------------------------------------------------------------------------

describe('malformed requests (raw HTTP)', () => {
  const CHAT = '/v1/chat/completions';
  const CMPL = '/v1/completions';
  const msgs = [{ role: 'user', content: 'hi' }];
  const chat = (extra) => ({ model: 'demo', messages: msgs, max_tokens: 2, ...extra });
  const bad = (param, message) => ({ status: 400, param, message });
  // Errors sent per "endpoint,status", to check the request counters against.
  const sent = new Map();
  let countersBefore;
  before(async () => {
    countersBefore = parseMetrics((await metrics(demo)).text);
  });
  // [name, path, body (object or raw string), expected]
  const cases = [
    ['malformed JSON', CHAT, '{"model": "demo", "messages": [', { status: 400, message: /JSON/ }],
    ['empty body', CHAT, '', { status: 400, message: /JSON/ }],
    ['invalid UTF-8 is not JSON', CHAT, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), { status: 400, message: /JSON/ }],
    ['body is an array', CHAT, '[1, 2]', bad('body', /JSON object/)],
    ['body is a string', CHAT, '"hello"', bad('body', /JSON object/)],
    ['missing model', CHAT, { messages: msgs }, bad('model', /model/)],
    ['model is not a string', CHAT, { model: 7, messages: msgs }, bad('model')],
    ['unknown model', CHAT, { model: 'no-such-model', messages: msgs }, { status: 404, param: 'model', code: 'model_not_found', message: /no-such-model/ }],
    ['missing messages', CHAT, { model: 'demo' }, bad('messages')],
    ['empty messages', CHAT, { model: 'demo', messages: [] }, bad('messages')],
    ['messages is an object', CHAT, { model: 'demo', messages: { role: 'user', content: 'x' } }, bad('messages')],
    ['message is not an object', CHAT, { model: 'demo', messages: ['hi'] }, bad('messages[0]')],
    ['message without role', CHAT, { model: 'demo', messages: [{ content: 'x' }] }, bad('messages[0].role')],
    ['unknown role', CHAT, { model: 'demo', messages: [{ role: 'wizard', content: 'x' }] }, bad('messages[0].role', /wizard/)],
    ['user content is a number', CHAT, { model: 'demo', messages: [{ role: 'user', content: 42 }] }, bad('messages[0].content')],
    ['user content missing', CHAT, { model: 'demo', messages: [{ role: 'user' }] }, bad('messages[0].content')],
    ['second message bad', CHAT, { model: 'demo', messages: [{ role: 'user', content: 'a' }, { role: 'user', content: { x: 1 } }] }, bad('messages[1].content')],
    ['image part on a text model', CHAT, { model: 'demo', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }, bad('messages[0].content', /image_url/)],
    ['tool message without tool_call_id', CHAT, { model: 'demo', messages: [{ role: 'user', content: 'a' }, { role: 'tool', content: 'b' }] }, bad('messages[1].tool_call_id')],
    ['temperature above 2', CHAT, chat({ temperature: 2.5 }), bad('temperature')],
    ['temperature negative', CHAT, chat({ temperature: -0.1 }), bad('temperature')],
    ['temperature is a string', CHAT, chat({ temperature: 'hot' }), bad('temperature')],
    ['top_p above 1', CHAT, chat({ top_p: 1.5 }), bad('top_p')],
    ['top_p zero', CHAT, chat({ top_p: 0 }), bad('top_p')],
    ['presence_penalty out of range', CHAT, chat({ presence_penalty: 3 }), bad('presence_penalty')],
    ['frequency_penalty out of range', CHAT, chat({ frequency_penalty: -2.5 }), bad('frequency_penalty')],
    ['max_tokens negative', CHAT, chat({ max_tokens: -1 }), bad('max_tokens')],
    ['max_tokens zero', CHAT, chat({ max_tokens: 0 }), bad('max_tokens')],
    ['max_tokens is a string', CHAT, chat({ max_tokens: '5' }), bad('max_tokens')],
    ['max_tokens is fractional', CHAT, chat({ max_tokens: 2.5 }), bad('max_tokens')],
    ['n = 2', CHAT, chat({ n: 2 }), bad('n')],
    ['seed is fractional', CHAT, chat({ seed: 1.5 }), bad('seed')],
    ['stream is a string', CHAT, chat({ stream: 'yes' }), bad('stream')],
    ['stream_options without stream', CHAT, chat({ stream_options: { include_usage: true } }), bad('stream_options')],
    ['stop with 5 strings', CHAT, chat({ stop: ['a', 'b', 'c', 'd', 'e'] }), bad('stop')],
    ['stop is a number', CHAT, chat({ stop: 5 }), bad('stop')],
    ['stop holds a number', CHAT, chat({ stop: ['a', 1] }), bad('stop')],
    ['logit_bias is an array', CHAT, chat({ logit_bias: [1, 2] }), bad('logit_bias')],
    ['logit_bias key not a token id', CHAT, chat({ logit_bias: { abc: 1 } }), bad('logit_bias', /abc/)],
    ['logit_bias value above 100', CHAT, chat({ logit_bias: { 5: 500 } }), bad('logit_bias')],
    ['logit_bias value is a string', CHAT, chat({ logit_bias: { 5: 'x' } }), bad('logit_bias')],
    ['top_logprobs without logprobs', CHAT, chat({ top_logprobs: 2 }), bad('top_logprobs')],
    ['top_logprobs above 20', CHAT, chat({ logprobs: true, top_logprobs: 21 }), bad('top_logprobs')],
    ['logprobs is a string', CHAT, chat({ logprobs: 'yes' }), bad('logprobs')],
    ['response_format json_object', CHAT, chat({ response_format: { type: 'json_object' } }), bad('response_format')],
    ['tools is an object', CHAT, chat({ tools: { type: 'function' } }), bad('tools')],
    ['tool without function', CHAT, chat({ tools: [{ type: 'function' }] }), bad('tools[0]')],
    ['tool of another type', CHAT, chat({ tools: [{ type: 'retrieval', function: { name: 'x' } }] }), bad('tools[0]')],
    ['tool function without name', CHAT, chat({ tools: [{ type: 'function', function: { description: 'x' } }] }), bad('tools[0].function.name')],
    ['tool parameters not an object', CHAT, chat({ tools: [{ type: 'function', function: { name: 'f', parameters: 'x' } }] }), bad('tools[0].function.parameters')],
    ['tool_choice without tools', CHAT, chat({ tool_choice: 'required' }), bad('tool_choice')],
    ['tool_choice names a missing function', CHAT, chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }), bad('tool_choice', /'g'/)],
    ['context_length_exceeded by max_tokens', CHAT, chat({ max_tokens: 5000 }), { status: 400, param: 'messages', code: 'context_length_exceeded', message: /2048/ }],
    ['context_length_exceeded by the prompt', CHAT, { model: 'demo', max_tokens: 2, messages: [{ role: 'user', content: 'hello world '.repeat(1500) }] }, { status: 400, param: 'messages', code: 'context_length_exceeded', message: /2048/ }],
    ['completions: missing prompt', CMPL, { model: 'demo' }, bad('prompt')],
    ['completions: empty prompt', CMPL, { model: 'demo', prompt: '' }, bad('prompt')],
    ['completions: prompt is an object', CMPL, { model: 'demo', prompt: { text: 'x' } }, bad('prompt')],
    ['completions: batched prompts', CMPL, { model: 'demo', prompt: ['a', 'b'] }, bad('prompt', /batch/)],
    ['completions: token id out of the vocabulary', CMPL, { model: 'demo', prompt: [1, 99999] }, bad('prompt', /99999/)],
    ['completions: negative token id', CMPL, { model: 'demo', prompt: [1, -3] }, bad('prompt')],
    ['completions: unknown model', CMPL, { model: 'nope', prompt: 'x' }, { status: 404, param: 'model', code: 'model_not_found' }],
    ['completions: suffix', CMPL, { model: 'demo', prompt: 'x', suffix: 'y' }, bad('suffix')],
    ['completions: context_length_exceeded', CMPL, { model: 'demo', prompt: 'x', max_tokens: 4000 }, { status: 400, param: 'prompt', code: 'context_length_exceeded', message: /2048/ }],
    ['completions: logprobs above 20', CMPL, { model: 'demo', prompt: 'x', logprobs: 21 }, bad('logprobs')],
  ];
  for (const [name, p, body, expected] of cases) {
    test(`${name} -> ${expected.status}`, async () => {
      const res = await postJson(demo.http, p, typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
      const key = `${p === CHAT ? 'chat' : 'completions'},${res.status}`;
      sent.set(key, (sent.get(key) ?? 0) + 1);
      assertOpenAiError(res, expected);
    });
  }

  test('logit_bias token id outside the vocabulary -> 400 param logit_bias', async () => {
    const res = await postJson(demo.http, CHAT, chat({ logit_bias: { 99999: 5 } }));
    assertOpenAiError(res, { status: 400, param: 'logit_bias', message: /99999/ });
    assert.doesNotMatch(res.json.error.message, /127\.0\.0\.1|decode worker/, 'the error leaks an internal address');
  });

  test('streaming request with a logit_bias token id outside the vocabulary -> HTTP 400, not a 200 stream', async () => {
    const res = await postJson(demo.http, CHAT, chat({ logit_bias: { 99999: 5 }, stream: true }));
    assertOpenAiError(res, { status: 400, param: 'logit_bias', message: /99999/ });
  });

  test('unknown path -> 404 Invalid URL', async () => {
    const res = await postJson(demo.http, '/v1/no/such/thing', chat({}));
    assertOpenAiError(res, { status: 404, message: /Invalid URL \(POST \/v1\/no\/such\/thing\)/ });
    const get = await fetch(`${demo.http}/v2/models`);
    assert.equal(get.status, 404);
  });

  test('wrong method -> 405 with Allow and the error shape', async () => {
    for (const [method, p, allow] of [['GET', CHAT, /POST/], ['DELETE', '/v1/models', /GET/], ['PUT', CMPL, /POST/]]) {
      const r = await fetch(demo.http + p, { method });
      const text = await r.text();
      const res = { status: r.status, headers: r.headers, text, json: JSON.parse(text) };
      assertOpenAiError(res, { status: 405, message: new RegExp(method) });
      assert.match(r.headers.get('allow'), allow);
    }
  });

  test('body over the limit (8 MiB by default) -> 413', async () => {
    const res = await rawExchange(demo.info.http_address, [
      'POST /v1/chat/completions HTTP/1.1', 'Host: x', 'Content-Type: application/json',
      `Content-Length: ${9 * 1024 * 1024}`, 'Connection: close',
    ].join('\r\n'), ['{"model": "demo", "messages": [']);
    assert.equal(res.status, 413, res.body);
    const j = JSON.parse(res.body);
    assert.equal(j.error.type, 'invalid_request_error');
    assert.match(j.error.message, /too large/i);
  });

  test('the server is healthy after the malformed requests; they were counted', async (t) => {
    const r = await client.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 2, temperature: 0 });
    assert.equal(r.choices.length, 1);
    // Every rejected request was counted under its endpoint and status.
    const m = parseMetrics((await metrics(demo)).text);
    if (sent.size === 0) return t.skip('no malformed request ran (filtered out)');
    for (const [key, n] of sent) {
      const [endpoint, status] = key.split(',');
      const name = `krasis_requests_total{endpoint="${endpoint}",status="${status}"}`;
      const delta = (m.get(name) ?? 0) - (countersBefore.get(name) ?? 0);
      assert.ok(delta >= n, `${name} grew by ${delta}, but ${n} such requests were sent`);
    }
  });
});

// ---------------------------------------------------------------------------
// `krasis serve` has no --api-key or --max-body-mb; a second gateway started
// directly with them, in front of the demo cluster's decode worker, covers auth
// and a lowered body limit.

describe('api key and body limit (standalone gateway)', () => {
  let gw;
  let http;
  let address;
  const KEY = 'sk-krasis-test-key';

  before(async () => {
    const port = await freePort();
    address = `127.0.0.1:${port}`;
    http = `http://${address}`;
    const ready = path.join(demo.home, 'auth-gateway.ready.json');
    gw = spawnGroup(path.join(BIN_DIR, 'krasis-gateway'), [
      '--listen', '127.0.0.1:0', '--ready-file', ready, '--http-listen', address, '--model', DEMO_MODEL,
      '--decode', demo.info.services.decode, '--prefill', demo.info.services.prefill,
      '--api-key', KEY, '--max-body-mb', '1',
    ]);
    await waitFor('the standalone gateway', async () => fs.existsSync(ready) && (await fetch(`${http}/health`)).status === 200, 30_000, gw);
  });

  after(async () => {
    const r = await stopGroup(gw);
    assert.deepEqual(r, { code: 0, signal: null }, 'krasis-gateway did not exit cleanly on SIGTERM');
  });

  test('no key / wrong key -> 401 invalid_api_key; right key works (SDK)', async () => {
    const wrong = new OpenAI({ baseURL: `${http}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, `${e}`);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
    const right = new OpenAI({ baseURL: `${http}/v1`, apiKey: KEY, maxRetries: 0 });
    const r = await right.chat.completions.create({ model: 'demo', messages: USER, max_tokens: 3, temperature: 0 });
    assert.ok(r.choices[0].message.content.length > 0);

    const none = await postJson(http, '/v1/chat/completions', chat());
    assertOpenAiError(none, { status: 401, code: 'invalid_api_key', message: /API key/ });
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    const basic = await postJson(http, '/v1/chat/completions', chat(), { Authorization: `Basic ${KEY}` });
    assertOpenAiError(basic, { status: 401, code: 'invalid_api_key' });
    const badKey = await postJson(http, '/v1/completions', { model: 'demo', prompt: 'x' }, { Authorization: 'Bearer nope' });
    assertOpenAiError(badKey, { status: 401, code: 'invalid_api_key', message: /Incorrect API key/ });
    // /health stays public for load balancers.
    assert.equal((await fetch(`${http}/health`)).status, 200);
  });

  test('a real body over --max-body-mb 1 -> 413', async () => {
    const payload = JSON.stringify({ model: 'demo', max_tokens: 1, messages: [{ role: 'user', content: 'x'.repeat(1536 * 1024) }] });
    const bytes = Buffer.from(payload);
    const pieces = [];
    for (let i = 0; i < bytes.length; i += 64 * 1024) pieces.push(bytes.subarray(i, i + 64 * 1024));
    const res = await rawExchange(address, [
      'POST /v1/chat/completions HTTP/1.1', 'Host: x', 'Content-Type: application/json', `Authorization: Bearer ${KEY}`,
      `Content-Length: ${bytes.length}`, 'Connection: close',
    ].join('\r\n'), pieces);
    assert.equal(res.status, 413, res.body);
    assert.match(JSON.parse(res.body).error.message, /1048576 bytes/);
    // The gateway is fine afterwards.
    const ok = await postJson(http, '/v1/chat/completions', chat(), { Authorization: `Bearer ${KEY}` });
    assert.equal(ok.status, 200, ok.text);
  });

  function chat() {
    return { model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
  }
});

// ---------------------------------------------------------------------------
// Tool calls, on a scripted model whose reply is always one get_weather call.

describe('tool calls (scripted model)', () => {
  const MAKER = path.join(BIN_DIR, 'make_scripted_model');
  let cluster;
  let tc; // SDK client
  let scratch;
  const MODEL_ID = 'scripted';
  const tools = [{
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  }];
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];

  before(async () => {
    if (!fs.existsSync(MAKER)) {
      throw new Error(`${MAKER} is missing: build the make_scripted_model target (scripts/build); the tool-call tests need it`);
    }
    scratch = makeScratchDir('krasis-scripted-');
    const out = path.join(scratch, MODEL_ID);
    const maker = spawnGroup(MAKER, ['--from', DEMO_MODEL, '--out', out]);
    const r = await Promise.race([maker.exited, timeLimit(120_000)]);
    await stopGroup(maker, 1000);
    assert.deepEqual(r, { code: 0, signal: null }, `make_scripted_model failed:\n${maker.log()}`);
    assert.ok(fs.existsSync(path.join(out, 'config.json')), 'make_scripted_model wrote no config.json');
    cluster = await startCluster(out);
    tc = new OpenAI({ baseURL: cluster.baseURL, apiKey: 'not-needed', maxRetries: 0, timeout: 60_000 });
  });

  after(async () => {
    if (cluster) {
      const r = await cluster.stop();
      assert.deepEqual(r, { code: 0, signal: null }, 'krasis serve (scripted) did not exit cleanly');
    }
    if (scratch) removeScratchDir(scratch);
  });

  test('the scripted model is served under its folder name', async () => {
    const ids = [];
    for await (const m of tc.models.list()) ids.push(m.id);
    assert.deepEqual(ids, [MODEL_ID]);
  });

  test('non-streaming: message.tool_calls, finish_reason tool_calls', async () => {
    const r = await tc.chat.completions.create({ model: MODEL_ID, messages, tools, temperature: 0, max_tokens: 64 });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(r));
    assert.ok(c.message.content === null || c.message.content === '', `content ${JSON.stringify(c.message.content)}`);
    assert.equal(c.message.role, 'assistant');
    assert.equal(c.message.tool_calls.length, 1);
    const call = c.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(typeof call.id, 'string');
    assert.ok(call.id.length > 0, 'empty tool call id');
    assert.equal(call.function.name, 'get_weather');
    assert.equal(typeof call.function.arguments, 'string', 'arguments must be a JSON string');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
    assert.ok(r.usage.completion_tokens > 0);
    // The conversation continues with the tool result (the template renders it).
    const next = await tc.chat.completions.create({
      model: MODEL_ID, tools, temperature: 0, max_tokens: 64,
      messages: [...messages, c.message, { role: 'tool', tool_call_id: call.id, content: '{"temp_c": 18}' }],
    });
    assert.ok(['tool_calls', 'stop', 'length'].includes(next.choices[0].finish_reason));
  });

  test('streaming: tool_call deltas accumulate to the same call', async () => {
    const stream = await tc.chat.completions.create({
      model: MODEL_ID, messages, tools, temperature: 0, max_tokens: 64, stream: true, stream_options: { include_usage: true },
    });
    const calls = [];
    const finishes = [];
    let content = '';
    let usage;
    let first = true;
    for await (const ch of stream) {
      if (ch.usage) usage = ch.usage;
      if (!ch.choices.length) continue;
      const { delta, finish_reason: fr } = ch.choices[0];
      if (first) {
        assert.equal(delta.role, 'assistant');
        first = false;
      }
      if (fr) finishes.push(fr);
      content += delta.content ?? '';
      for (const d of delta.tool_calls ?? []) {
        assert.ok(Number.isInteger(d.index), 'tool call delta without index');
        if (!calls[d.index]) {
          // The first delta of a call carries its id, type and name.
          assert.ok(d.id, 'first tool call delta without id');
          assert.equal(d.type, 'function');
          calls[d.index] = { id: d.id, name: d.function.name, arguments: d.function.arguments ?? '' };
        } else {
          assert.ok(!d.function?.name, 'the name is sent once');
          calls[d.index].arguments += d.function?.arguments ?? '';
        }
      }
    }
    assert.deepEqual(finishes, ['tool_calls']);
    assert.equal(content, '', `streamed content ${JSON.stringify(content)}`);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].name, 'get_weather');
    assert.deepEqual(JSON.parse(calls[0].arguments), { city: 'Paris' });
    assert.ok(usage && usage.completion_tokens > 0);
  });

  test('tool_choice none: no tool parsing, the call stays in content', async () => {
    const r = await tc.chat.completions.create({ model: MODEL_ID, messages, tools, tool_choice: 'none', temperature: 0, max_tokens: 64 });
    assert.equal(r.choices[0].message.tool_calls ?? undefined, undefined);
    assert.notEqual(r.choices[0].finish_reason, 'tool_calls');
  });
});
