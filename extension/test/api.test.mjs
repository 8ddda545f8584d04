// The server client against a scripted local HTTP server (node --test): retries, errors, SSE, polling.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';

import { ApiError, backoff, followCheck, lookup, request } from '../src/api.js';
import { RETRY_ATTEMPTS, RETRY_CAP_MS } from '../src/limits.js';

let server;
let settings;
let script = []; // per test: (req, res) handlers answering successive requests
const seen = [];

before(async () => {
  server = createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    const handler = script.shift();
    if (handler) handler(req, res);
    else res.writeHead(500).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  settings = { serverUrl: `http://127.0.0.1:${server.address().port}`, token: 's3cret' };
});
after(() => server.close());

const json =
  (status, body, headers = {}) =>
  (req, res) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
const reset = (...handlers) => {
  script = handlers;
  seen.length = 0;
};

test('backoff is exponential, jittered and capped', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ms = backoff(attempt);
    assert.ok(ms > 0 && ms <= RETRY_CAP_MS, `${attempt}: ${ms}`);
  }
  assert.equal(backoff(0, 2), 2000); // Retry-After wins
});

test('transient failures are retried, then the answer comes through with the token', async () => {
  reset(json(503, { error: { code: 'busy', message: 'busy' } }, { 'Retry-After': '0' }), json(200, { ok: 1 }));
  const res = await request(settings, '/v1/models');
  assert.deepEqual(res.body, { ok: 1 });
  assert.equal(seen.length, 2);
  assert.equal(seen[1].headers.authorization, 'Bearer s3cret');
});

test('a refused URL is not retried and keeps its code', async () => {
  reset(json(400, { error: { code: 'url_refused', message: 'private address', request_id: 'r1' } }));
  await assert.rejects(request(settings, '/v1/checks', { method: 'POST', json: { url: 'x' } }), (err) => {
    assert.ok(err instanceof ApiError);
    assert.deepEqual([err.status, err.code, err.requestId, err.retryable], [400, 'url_refused', 'r1', false]);
    return true;
  });
  assert.equal(seen.length, 1);
});

test('502 fetch_failed is final, a bare 502 from a proxy is retried until the limit', async () => {
  reset(json(502, { error: { code: 'fetch_failed', message: 'upstream said 403' } }));
  await assert.rejects(request(settings, '/v1/checks'), { code: 'fetch_failed' });
  assert.equal(seen.length, 1);
  reset(...Array(RETRY_ATTEMPTS).fill((req, res) => res.writeHead(502, { 'Retry-After': '0' }).end('bad gateway')));
  await assert.rejects(request(settings, '/v1/checks'), { status: 502, code: 'http_502' });
  assert.equal(seen.length, RETRY_ATTEMPTS);
});

test('a dead server is a network error after the retries', async () => {
  const dead = { serverUrl: 'http://127.0.0.1:9', token: '' };
  await assert.rejects(request(dead, '/healthz'), { status: 0, code: 'network' });
});

test('a cache miss is null', async () => {
  reset(json(404, { error: { code: 'not_found', message: 'no' } }));
  assert.equal(await lookup(settings, { frameHashes: ['0123456789abcdef'] }), null);
  assert.equal(seen[0].method, 'POST');
});

test('events resume with Last-Event-ID after the stream drops', async () => {
  const sse = (body) => (req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    res.end(body);
  };
  reset(
    sse('id: 1\nevent: progress\ndata: {"status":"running","frames":1}\n\n'),
    sse('id: 2\nevent: verdict\ndata: {"label":"authentic"}\n\n'),
  );
  const events = [];
  await followCheck(settings, 'abc', { onEvent: async (name, data, id) => events.push([name, data, id]) });
  assert.deepEqual(events, [
    ['progress', { status: 'running', frames: 1 }, '1'],
    ['verdict', { label: 'authentic' }, '2'],
  ]);
  assert.equal(seen[1].headers['last-event-id'], '1');
});

test('without an event stream the check is polled to its verdict', async () => {
  reset(
    json(200, { not: 'a stream' }),
    json(200, { id: 'abc', status: 'running', frames_analyzed: 2 }),
    json(200, { id: 'abc', status: 'done', verdict: { label: 'manipulated' } }),
  );
  const events = [];
  await followCheck(settings, 'abc', { onEvent: async (name, data) => events.push([name, data]) });
  assert.deepEqual(events, [
    ['progress', { status: 'running', frames: 2 }],
    ['verdict', { label: 'manipulated' }],
  ]);
});
