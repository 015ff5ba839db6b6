#!/usr/bin/env node
// fake-api.mjs: a DEVELOPMENT AID ONLY. It serves the built page (dist/) and
// answers the viz API (api/viz/v1/viz.go) with synthetic traffic that
// changes over time, so the page can be worked on without a cluster. It is
// not a test of the controller and proves nothing about it: the real check
// runs test/e2e/dashboard/check.mjs against `mesh viz dashboard` in front of
// the real mesh-controller on the local cluster (test/e2e).
//
//   node dev/fake-api.mjs [--port 8086] [--host 127.0.0.1] [--dist DIR] [--down]
//                         [--tap-error-after N] [--jaeger URL] [--verbose]
//
// --port 0 picks a free port. The first line on stdout is the page's URL.
// --down answers every API request with 503 and a vizv1.Error body, to see
// the error banner; --tap-error-after N ends every tap after N events with
// an event of type "error", the way the real API reports a failure after
// the stream started. --jaeger URL answers /config.json as `mesh viz
// dashboard` does with a Jaeger: tapped requests with a trace ID (about
// half of them) link to URL/trace/<ID>; without it they show the ID only.
// `npm run dev` (Vite) proxies /api/ here by default.

import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: flags } = parseArgs({
  options: {
    port: { type: 'string', default: '8086' },
    host: { type: 'string', default: '127.0.0.1' },
    dist: { type: 'string', default: join(dirname(fileURLToPath(import.meta.url)), '..', 'dist') },
    down: { type: 'boolean', default: false },
    'tap-error-after': { type: 'string', default: '0' },
    jaeger: { type: 'string', default: '' },
    verbose: { type: 'boolean', default: false },
  },
});
const DIST = resolve(flags.dist);
const TRUST_DOMAIN = 'cluster.local';
const SCRAPE_S = 5;
const RETENTION_S = 15 * 60;

// ---------------------------------------------------------------------------
// The synthetic cluster.

/** Deployments: pods, meshed pods, service account. */
const deployments = [
  { ns: 'shop', name: 'loadgen', pods: 1, meshed: 1 },
  { ns: 'shop', name: 'web', pods: 3, meshed: 3 },
  { ns: 'shop', name: 'api', pods: 2, meshed: 2 },
  { ns: 'shop', name: 'cart', pods: 2, meshed: 2 },
  { ns: 'shop', name: 'db', pods: 1, meshed: 1 },
  { ns: 'shop', name: 'legacy', pods: 1, meshed: 0 },
  { ns: 'billing', name: 'payments', pods: 2, meshed: 2 },
  { ns: 'mesh-system', name: 'mesh-controller', pods: 1, meshed: 0 },
  { ns: 'default', name: 'nginx', pods: 2, meshed: 0 },
];

/**
 * Edges: client → server with a base RPS, an error ratio, a median latency
 * (ms), and whether the hop is mesh TLS. api's errors come in bursts.
 */
const edges = [
  {
    src: 'shop/loadgen',
    dst: 'shop/web',
    rps: 40,
    err: 0.002,
    p50: 14,
    mtls: true,
    methods: ['GET', 'GET', 'POST'],
    paths: ['/', '/products/', '/cart'],
  },
  {
    src: 'shop/web',
    dst: 'shop/api',
    rps: 55,
    err: 0.004,
    p50: 6,
    mtls: true,
    burst: true,
    methods: ['GET', 'GET', 'PUT'],
    paths: ['/api/v1/items/', '/api/v1/search', '/api/v1/items/'],
  },
  {
    src: 'shop/web',
    dst: 'shop/cart',
    rps: 12,
    err: 0.001,
    p50: 4,
    mtls: true,
    methods: ['GET', 'POST'],
    paths: ['/cart/', '/cart/checkout'],
  },
  { src: 'shop/api', dst: 'shop/db', rps: 70, err: 0, p50: 1.8, mtls: true, methods: ['POST'], paths: ['/query'] },
  { src: 'shop/cart', dst: 'shop/db', rps: 15, err: 0, p50: 2.2, mtls: true, methods: ['POST'], paths: ['/query'] },
  {
    src: 'shop/api',
    dst: 'shop/legacy',
    rps: 3,
    err: 0.03,
    p50: 45,
    mtls: false,
    methods: ['GET'],
    paths: ['/v0/inventory'],
  },
  {
    src: 'shop/cart',
    dst: 'billing/payments',
    rps: 2.5,
    err: 0.01,
    p50: 80,
    mtls: true,
    methods: ['POST'],
    paths: ['/charge'],
  },
  // A webhook back to the caller: a cycle, drawn as a back edge.
  {
    src: 'billing/payments',
    dst: 'shop/cart',
    rps: 0.5,
    err: 0,
    p50: 9,
    mtls: true,
    methods: ['POST'],
    paths: ['/cart/payment-callback'],
  },
];

const deployByKey = new Map(deployments.map((d) => [`${d.ns}/${d.name}`, d]));

function hash(str) {
  let h = 2166136261;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

/** noise is a deterministic pseudo-random number in [0,1) for a key and a time slot. */
function noise(key, slot) {
  let x = hash(`${key}#${slot}`);
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 4294967296;
}

function podNames(d) {
  // Like a ReplicaSet's pods: NAME-<template hash>-<5 random characters>.
  const alnum = 'bcdfghjklmnpqrstvwxz2456789';
  const rs = hash(d.name).toString(16).padStart(8, '0').slice(0, 9);
  return Array.from({ length: d.pods }, (_, i) => {
    let id = '';
    for (let h = hash(`pod:${d.name}:${i}`), j = 0; j < 5; j++, h = Math.floor(h / alnum.length))
      id += alnum[h % alnum.length];
    return `${d.name}-${rs}-${id}`;
  });
}

function identity(ns, name) {
  return `spiffe://${TRUST_DOMAIN}/ns/${ns}/sa/${name}`;
}

/** edgeAt is the traffic of edge e over the seconds before t (epoch s). */
function edgeAt(e, t, span) {
  const slot = Math.floor(t / SCRAPE_S);
  const wave = 1 + 0.3 * Math.sin((2 * Math.PI * t) / 180 + (hash(e.src + e.dst) % 10));
  const rps = Math.max(0, e.rps * wave * (0.92 + 0.16 * noise(e.src + e.dst, slot)));
  let err = e.err * (0.5 + noise(`${e.dst}err`, slot));
  if (e.burst && Math.floor(t / 60) % 4 === 1) err = 0.06 + 0.03 * noise('burst', slot);
  const requests = Math.round(rps * span);
  const successes = Math.round(requests * (1 - err));
  const jitter = 0.85 + 0.3 * noise(`${e.dst}lat`, slot);
  const p50 = e.p50 * jitter * (err > 0.05 ? 1.6 : 1);
  return {
    requests,
    successes,
    rps: requests / span,
    p50,
    p95: p50 * (2.4 + 0.5 * noise(`${e.dst}p95`, slot)),
    p99: p50 * (4.2 + 1.5 * noise(`${e.dst}p99`, slot)),
  };
}

function emptyStats() {
  return {
    requests: 0,
    successes: 0,
    successRate: null,
    rps: 0,
    latencyP50Ms: null,
    latencyP95Ms: null,
    latencyP99Ms: null,
    tcpConnections: 0,
    readBytesPerSec: 0,
    writeBytesPerSec: 0,
    totalRequests: 0,
  };
}

/** combine sums edge traffic into vizv1.Stats (latencies: request-weighted means). */
function combine(parts, t) {
  const s = emptyStats();
  let w50 = 0;
  let w95 = 0;
  let w99 = 0;
  for (const p of parts) {
    s.requests += p.requests;
    s.successes += p.successes;
    s.rps += p.rps;
    w50 += p.p50 * p.requests;
    w95 += p.p95 * p.requests;
    w99 += p.p99 * p.requests;
    s.tcpConnections += Math.max(1, Math.round(p.rps / 8));
  }
  if (s.requests > 0) {
    s.successRate = s.successes / s.requests;
    s.latencyP50Ms = round(w50 / s.requests);
    s.latencyP95Ms = round(w95 / s.requests);
    s.latencyP99Ms = round(w99 / s.requests);
  }
  s.rps = round(s.rps);
  s.readBytesPerSec = round(s.rps * 420);
  s.writeBytesPerSec = round(s.rps * 2900);
  s.totalRequests = Math.round(s.rps * (t % 86400) + 1000);
  return s;
}

function round(v) {
  return Math.round(v * 1000) / 1000;
}

function inboundStats(key, t, span) {
  return combine(
    edges.filter((e) => e.dst === key).map((e) => edgeAt(e, t, span)),
    t,
  );
}

function resource(kind, ns, name) {
  return { kind, namespace: ns, name };
}

function statRows(kind, ns, name, t, span) {
  const inNs = (d) => !ns || d.ns === ns;
  switch (kind) {
    case 'deploy':
      return deployments
        .filter((d) => inNs(d) && (!name || d.name === name))
        .map((d) => ({
          resource: resource('deployment', d.ns, d.name),
          meshedPods: d.meshed,
          totalPods: d.pods,
          ...inboundStats(`${d.ns}/${d.name}`, t, span),
          identities: d.meshed > 0 ? [identity(d.ns, d.name)] : undefined,
        }));
    case 'svc':
      return deployments
        .filter((d) => inNs(d) && d.name !== 'loadgen' && (!name || d.name === name))
        .map((d) => ({
          resource: resource('service', d.ns, d.name),
          meshedPods: d.meshed,
          totalPods: d.pods,
          ...inboundStats(`${d.ns}/${d.name}`, t, span),
        }));
    case 'pod':
      return deployments.filter(inNs).flatMap((d) => {
        const whole = inboundStats(`${d.ns}/${d.name}`, t, span);
        return podNames(d)
          .filter((p) => !name || p === name)
          .map((p) => ({
            resource: resource('pod', d.ns, p),
            meshedPods: d.meshed > 0 ? 1 : 0,
            totalPods: 1,
            ...share(whole, d.pods),
          }));
      });
    case 'ns': {
      const names = [...new Set(deployments.map((d) => d.ns))].filter((n) => (!name || n === name) && inNs({ ns: n }));
      return names.map((n) => {
        const ds = deployments.filter((d) => d.ns === n);
        return {
          resource: resource('namespace', undefined, n),
          meshedPods: ds.reduce((a, d) => a + d.meshed, 0),
          totalPods: ds.reduce((a, d) => a + d.pods, 0),
          ...combine(
            edges.filter((e) => e.dst.startsWith(`${n}/`)).map((e) => edgeAt(e, t, span)),
            t,
          ),
        };
      });
    }
    default:
      return null;
  }
}

function share(s, n) {
  return {
    ...s,
    requests: Math.round(s.requests / n),
    successes: Math.round(s.successes / n),
    rps: round(s.rps / n),
    tcpConnections: Math.ceil(s.tcpConnections / n),
  };
}

function edgeList(ns, t, span) {
  return edges
    .filter((e) => !ns || e.src.startsWith(`${ns}/`) || e.dst.startsWith(`${ns}/`))
    .map((e) => {
      const [sns, sname] = e.src.split('/');
      const [dns, dname] = e.dst.split('/');
      const dst = deployByKey.get(e.dst);
      return {
        src: resource('deployment', sns, sname),
        dst: resource('deployment', dns, dname),
        srcId: identity(sns, sname),
        dstId: e.mtls && dst.meshed > 0 ? identity(dns, dname) : '',
        mtls: e.mtls,
        ...combine([edgeAt(e, t, span)], t),
      };
    });
}

// ---------------------------------------------------------------------------
// HTTP.

/** parseDuration reads Go's duration syntax ("1m", "30s", "1h30m") into seconds. */
function parseDuration(s) {
  const units = { ms: 0.001, s: 1, m: 60, h: 3600 };
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let seen = '';
  for (let m; (m = re.exec(s));) {
    total += Number(m[1]) * units[m[2]];
    seen += m[0];
  }
  if (seen !== s || seen === '') return NaN;
  return total;
}

class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function windowParam(q, def) {
  const raw = q.get('window') || def;
  const w = parseDuration(raw);
  if (!(w > 0)) throw new HTTPError(400, `window: invalid duration ${JSON.stringify(raw)}`);
  if (w > RETENTION_S) throw new HTTPError(400, `window ${raw} is longer than the retention (15m)`);
  return { raw, seconds: w };
}

const KINDS = {
  deploy: 'deploy',
  deployment: 'deploy',
  deployments: 'deploy',
  pod: 'pod',
  po: 'pod',
  pods: 'pod',
  svc: 'svc',
  service: 'svc',
  services: 'svc',
  ns: 'ns',
  namespace: 'ns',
  namespaces: 'ns',
};

function nowS() {
  return Date.now() / 1000;
}

function collected(t) {
  return new Date(Math.floor(t / SCRAPE_S) * SCRAPE_S * 1000).toISOString();
}

function handleStat(q) {
  const kind = KINDS[q.get('kind') ?? ''];
  if (!kind)
    throw new HTTPError(400, `kind: want one of deploy, pod, svc, ns, got ${JSON.stringify(q.get('kind') ?? '')}`);
  if (q.get('from') && q.get('to')) throw new HTTPError(400, 'from and to: give at most one of them');
  const w = windowParam(q, '1m');
  const t = nowS();
  const rows = statRows(kind, q.get('namespace') ?? '', q.get('name') ?? '', t, w.seconds);
  if (q.get('name') && rows.length === 0) {
    throw new HTTPError(404, `${kind} ${q.get('namespace') ?? ''}/${q.get('name')} not found`);
  }
  return { window: w.raw, collected: collected(t), rows };
}

function handleEdges(q) {
  const w = windowParam(q, '1m');
  const t = nowS();
  return { window: w.raw, collected: collected(t), edges: edgeList(q.get('namespace') ?? '', t, w.seconds) };
}

function handleSeries(q) {
  const kind = KINDS[q.get('kind') ?? ''];
  const ns = q.get('namespace');
  const name = q.get('name');
  if (!kind || !ns || !name) throw new HTTPError(400, 'kind, namespace and name are required');
  const w = windowParam(q, '10m');
  const stepRaw = q.get('step') || '10s';
  const step = parseDuration(stepRaw);
  if (!(step >= SCRAPE_S)) throw new HTTPError(400, `step ${stepRaw}: at least the scrape interval (${SCRAPE_S}s)`);
  const t = nowS();
  if (statRows(kind, ns, name, t, step).length === 0) throw new HTTPError(404, `${kind} ${ns}/${name} not found`);
  const end = Math.floor(t / step) * step;
  // Traffic "started" a while ago: a fresh fake shows a growing series, the
  // way a freshly installed controller does.
  const start = Math.max(end - w.seconds + step, STARTED - (STARTED % step) - 4 * 60);
  const points = [];
  for (let at = start; at <= end; at += step) {
    const [row] = statRows(kind, ns, name, at, step);
    const { resource: _r, meshedPods: _m, totalPods: _p, identities: _i, ...stats } = row;
    points.push({ time: new Date(at * 1000).toISOString(), ...stats });
  }
  return { resource: resource(kind === 'deploy' ? 'deployment' : kind, ns, name), step: stepRaw, points };
}

const STARTED = nowS();

const TAP_KINDS = { deploy: 'deploy', deployment: 'deploy', pod: 'pod', po: 'pod', ns: 'ns', namespace: 'ns' };

/** tapEdges picks the edges whose traffic a tap on resource sees, with the direction. */
function tapEdges(ns, res) {
  const [k, name] = res.split('/');
  const kind = TAP_KINDS[k];
  if (!kind || !name)
    throw new HTTPError(400, `resource ${JSON.stringify(res)}: want KIND/NAME with kind deploy, pod or ns`);
  const match = (key) => {
    const [kns, kname] = key.split('/');
    if (kind === 'ns') return kns === name;
    if (kns !== ns) return false;
    if (kind === 'deploy') return kname === name;
    return podNames(deployByKey.get(key)).includes(name);
  };
  if (kind === 'deploy' && !deployByKey.has(`${ns}/${name}`))
    throw new HTTPError(404, `deployment ${ns}/${name} not found`);
  const out = [];
  for (const e of edges) {
    if (match(e.dst) && deployByKey.get(e.dst).meshed > 0) out.push({ e, dir: 'inbound' });
    if (match(e.src)) out.push({ e, dir: 'outbound' });
  }
  return out;
}

function ip(key, i) {
  const h = hash(`${key}${i}`);
  return `10.42.${(h >> 8) & 0xff}.${(h & 0xfd) + 2}`;
}

function handleTap(q, res) {
  const ns = q.get('namespace') ?? '';
  const r = q.get('resource') ?? '';
  if (!r) throw new HTTPError(400, 'resource is required (KIND/NAME)');
  if (!ns && !r.startsWith('ns/')) throw new HTTPError(400, 'namespace is required');
  const candidates = tapEdges(ns, r);
  const method = q.get('method') ?? '';
  const prefix = q.get('path') ?? '';
  const authority = q.get('authority') ?? '';
  const maxRPS = Number(q.get('max_rps') || '100');

  res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
  res.flushHeaders();
  let seq = 0;
  const timers = new Set();
  const later = (ms, fn) => {
    const tm = setTimeout(() => {
      timers.delete(tm);
      fn();
    }, ms);
    timers.add(tm);
  };
  const errorAfter = Number(flags['tap-error-after']);
  let sent = 0;
  const send = (ev) => {
    if (res.writableEnded) return;
    res.write(`${JSON.stringify(ev)}\n`);
    if (errorAfter > 0 && ++sent === errorAfter) {
      const error = 'fake-api started with --tap-error-after: the proxies went away';
      res.end(`${JSON.stringify({ type: 'error', error, time: new Date().toISOString() })}\n`);
    }
  };
  const emit = () => {
    if (candidates.length === 0) return;
    const { e, dir } = candidates[Math.floor(Math.random() * candidates.length)];
    const src = deployByKey.get(e.src);
    const dst = deployByKey.get(e.dst);
    const i = Math.floor(Math.random() * e.methods.length);
    const m = e.methods[i];
    const path = e.paths[i].endsWith('/') ? `${e.paths[i]}${Math.floor(Math.random() * 900 + 100)}` : e.paths[i];
    const [dns, dname] = e.dst.split('/');
    const auth = `${dname}.${dns}.svc.cluster.local:${dname === 'db' ? 5432 : 80}`;
    if ((method && m !== method) || (prefix && !path.startsWith(prefix)) || (authority && auth !== authority)) return;
    const srcPod = podNames(src)[Math.floor(Math.random() * src.pods)];
    const dstPod = podNames(dst)[Math.floor(Math.random() * dst.pods)];
    const pod = dir === 'inbound' ? dstPod : srcPod;
    const base = {
      id: `${pod}:${++seq}`,
      namespace: dir === 'inbound' ? dst.ns : src.ns,
      pod,
      direction: dir,
      src: `${ip(e.src, srcPod)}:${40000 + Math.floor(Math.random() * 20000)}`,
      dst: `${ip(e.dst, dstPod)}:${dname === 'db' ? 5432 : 8080}`,
      dstWorkload: dir === 'outbound' && dst.meshed > 0 ? `deployment/${dname}` : undefined,
      clientId: e.mtls && dir === 'inbound' ? identity(src.ns, src.name) : undefined,
      serverId: e.mtls && dir === 'outbound' && dst.meshed > 0 ? identity(dst.ns, dst.name) : undefined,
      method: m,
      scheme: 'http',
      authority: auth,
      path,
      // The proxies sample a share of requests; only those carry a trace ID.
      traceId: Math.random() < 0.5 ? traceID() : undefined,
    };
    send({ type: 'request', time: new Date().toISOString(), ...base });
    const lat = e.p50 * (0.4 + Math.random() * Math.random() * 4);
    const ok = Math.random() > Math.max(e.err * 5, 0.01);
    later(Math.min(lat, 2000), () => {
      send({
        type: 'response',
        time: new Date().toISOString(),
        ...base,
        status: ok ? (m === 'POST' ? 201 : 200) : 503,
        latencyMs: round(lat),
        success: ok,
      });
    });
  };
  const rate = Math.min(maxRPS, 12);
  const ticker = setInterval(emit, 1000 / rate);
  emit();
  res.on('close', () => {
    clearInterval(ticker);
    for (const tm of timers) clearTimeout(tm);
  });
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

async function serveStatic(pathname, res) {
  const rel = normalize(decodeURIComponent(pathname)).replace(/^(\.\.(\/|\\|$))+/, '');
  let file = join(DIST, rel);
  if (!file.startsWith(DIST + sep) && file !== DIST) throw new HTTPError(404, 'not found');
  try {
    if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
    const body = await readFile(file);
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end(pathname === '/' ? `no ${join(DIST, 'index.html')}: run npm run build\n` : 'not found\n');
  }
}

/** traceID makes a random W3C trace ID: 32 lower-case hex digits. */
function traceID() {
  let id = '';
  while (id.length < 32) id += Math.floor(Math.random() * 16).toString(16);
  return id;
}

function sendJSON(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(`${JSON.stringify(body)}\n`);
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://fake');
  if (flags.verbose) console.log(req.method, url.pathname + url.search);
  try {
    if (url.pathname === '/config.json') {
      return sendJSON(res, 200, flags.jaeger ? { jaegerUrl: flags.jaeger } : {});
    }
    if (!url.pathname.startsWith('/api/')) {
      await serveStatic(url.pathname, res);
      return;
    }
    if (req.method !== 'GET') throw new HTTPError(405, `${req.method}: the viz API answers GET only`);
    if (flags.down) throw new HTTPError(503, 'fake-api started with --down: the controller is unavailable');
    const q = url.searchParams;
    switch (url.pathname) {
      case '/api/v1/stat':
        return sendJSON(res, 200, handleStat(q));
      case '/api/v1/edges':
        return sendJSON(res, 200, handleEdges(q));
      case '/api/v1/series':
        return sendJSON(res, 200, handleSeries(q));
      case '/api/v1/tap':
        return handleTap(q, res);
      default:
        throw new HTTPError(404, `no API at ${url.pathname}`);
    }
  } catch (err) {
    const status = err instanceof HTTPError ? err.status : 500;
    if (!res.headersSent) sendJSON(res, status, { error: err.message });
    else res.end();
  }
});

server.listen(Number(flags.port), flags.host, () => {
  const { address, port } = server.address();
  console.log(`http://${address}:${port}/`);
  console.error(`fake viz API (development aid only) serving ${DIST}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
