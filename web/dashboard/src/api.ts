// The viz API as the page reads it: the TypeScript shape of the JSON types
// of api/viz/v1/viz.go (the contract; keep the two in step) and the fetch
// helpers. Every request goes to the page's own origin under /api/v1/, which
// `mesh viz dashboard` reverse-proxies to the controller.

export interface Resource {
  kind: string;
  namespace?: string;
  name: string;
}

export interface Stats {
  requests: number;
  successes: number;
  successRate: number | null;
  rps: number;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  latencyP99Ms: number | null;
  tcpConnections: number;
  readBytesPerSec: number;
  writeBytesPerSec: number;
  totalRequests: number;
}

export interface StatRow extends Stats {
  resource: Resource;
  meshedPods: number;
  totalPods: number;
  identities?: string[];
}

export interface StatList {
  window: string;
  collected: string;
  rows: StatRow[] | null;
}

export interface Edge extends Stats {
  src: Resource;
  dst: Resource;
  srcId: string;
  dstId: string;
  mtls: boolean;
}

export interface EdgeList {
  window: string;
  collected: string;
  edges: Edge[] | null;
}

export interface Point extends Stats {
  time: string;
}

export interface Series {
  resource: Resource;
  step: string;
  points: Point[] | null;
}

export interface TapEvent {
  type: 'request' | 'response' | 'error';
  error?: string;
  id: string;
  time: string;
  namespace: string;
  pod: string;
  direction: string;
  src: string;
  dst: string;
  dstWorkload?: string;
  clientId?: string;
  serverId?: string;
  method: string;
  scheme?: string;
  authority: string;
  path: string;
  /** traceId is set when the proxy sampled the request: its trace is in the tracing backend. */
  traceId?: string;
  status?: number;
  grpcStatus?: number;
  latencyMs?: number;
  success?: boolean;
}

/** ApiError is a failed answer, carrying the message of the vizv1.Error body. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** isAbort tells an aborted request (page left, tap stopped) from a failure. */
export function isAbort(err: unknown): boolean {
  return err instanceof DOMException && err.name === 'AbortError';
}

export type Query = Record<string, string | undefined>;

/** apiURL builds a same-origin API URL, leaving out empty parameters. */
export function apiURL(path: string, query: Query): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== '') params.set(k, v);
  }
  const qs = params.toString();
  // Relative to the page so that a dashboard served under a path prefix
  // still reaches its own proxy.
  return `.${path}${qs ? `?${qs}` : ''}`;
}

/**
 * request performs a GET and returns the Response when it is a success;
 * otherwise it throws an ApiError with the server's message.
 */
export async function request(path: string, query: Query, signal: AbortSignal): Promise<Response> {
  let resp: Response;
  try {
    resp = await fetch(apiURL(path, query), { signal, headers: { Accept: 'application/json' } });
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(`GET ${path}: cannot reach the viz API: ${(err as Error).message}`, 0);
  }
  if (!resp.ok) {
    throw new ApiError(`GET ${path}: ${await errorMessage(resp)}`, resp.status);
  }
  return resp;
}

async function errorMessage(resp: Response): Promise<string> {
  const prefix = `${resp.status} ${resp.statusText}`.trim();
  let text = '';
  try {
    text = await resp.text();
  } catch {
    return prefix;
  }
  try {
    const body = JSON.parse(text) as { error?: unknown };
    if (typeof body.error === 'string' && body.error !== '') return `${prefix}: ${body.error}`;
  } catch {
    // Not a vizv1.Error: a proxy in between answered. Show its text.
  }
  const short = text.trim().slice(0, 200);
  return short ? `${prefix}: ${short}` : prefix;
}

async function getJSON<T>(path: string, query: Query, signal: AbortSignal): Promise<T> {
  const resp = await request(path, query, signal);
  try {
    return (await resp.json()) as T;
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(`GET ${path}: the answer is not JSON: ${(err as Error).message}`, resp.status);
  }
}

/**
 * DashboardConfig is what `mesh viz dashboard` itself tells the page (cli
 * dashboardConfig), at paths.config: jaegerUrl is the local URL of the
 * mesh's Jaeger UI when it has one.
 */
export interface DashboardConfig {
  jaegerUrl?: string;
}

/** getConfig reads the dashboard's config; a page served without it (npm run dev) gets {}. */
export async function getConfig(signal: AbortSignal): Promise<DashboardConfig> {
  try {
    return await getJSON<DashboardConfig>(paths.config, {}, signal);
  } catch (err) {
    if (isAbort(err)) throw err;
    return {};
  }
}

const TRACE_ID = /^[0-9a-f]{32}$/;

/**
 * traceURL is the page of trace traceId in the Jaeger UI at jaegerUrl, or
 * undefined when either is missing or not what the dashboard sends: a
 * link is built only from an http(s) base and a W3C trace ID.
 */
export function traceURL(jaegerUrl: string | undefined, traceId: string | undefined): string | undefined {
  if (!jaegerUrl || !traceId || !TRACE_ID.test(traceId) || /^0+$/.test(traceId)) return undefined;
  let base: URL;
  try {
    base = new URL(jaegerUrl);
  } catch {
    return undefined;
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') return undefined;
  return `${base.origin}${base.pathname.replace(/\/+$/, '')}/trace/${traceId}`;
}

export const paths = {
  config: '/config.json',
  stat: '/api/v1/stat',
  edges: '/api/v1/edges',
  series: '/api/v1/series',
  tap: '/api/v1/tap',
} as const;

export interface StatQuery {
  kind: 'deploy' | 'pod' | 'svc' | 'ns';
  namespace?: string;
  name?: string;
  window?: string;
}

export function getStat(q: StatQuery, signal: AbortSignal): Promise<StatList> {
  return getJSON<StatList>(paths.stat, { ...q }, signal);
}

export function getEdges(q: { namespace?: string; window?: string }, signal: AbortSignal): Promise<EdgeList> {
  return getJSON<EdgeList>(paths.edges, q, signal);
}

export interface SeriesQuery {
  kind: 'deploy' | 'pod' | 'svc' | 'ns';
  namespace: string;
  name: string;
  window?: string;
  step?: string;
}

export function getSeries(q: SeriesQuery, signal: AbortSignal): Promise<Series> {
  return getJSON<Series>(paths.series, { ...q }, signal);
}

export interface TapQuery {
  namespace: string;
  resource: string;
  method?: string;
  authority?: string;
  path?: string;
  max_rps?: string;
}

/**
 * tap streams the NDJSON answer of PathTap, calling onEvent for every line,
 * until the server ends the stream or signal aborts. It reads the body with
 * a ReadableStream reader (not EventSource: the API is plain NDJSON over GET).
 */
export async function tap(q: TapQuery, signal: AbortSignal, onEvent: (ev: TapEvent) => void): Promise<void> {
  const resp = await request(paths.tap, { ...q }, signal);
  if (!resp.body) throw new ApiError('tap: the answer has no body', resp.status);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line !== '') onEvent(parseTapLine(line));
    }
  }
  const rest = buf.trim();
  if (rest !== '') onEvent(parseTapLine(rest));
}

function parseTapLine(line: string): TapEvent {
  try {
    return JSON.parse(line) as TapEvent;
  } catch {
    throw new ApiError(`tap: a line of the stream is not JSON: ${line.slice(0, 120)}`, 200);
  }
}
