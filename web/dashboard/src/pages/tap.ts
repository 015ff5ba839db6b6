// Tap: live requests and responses of a resource, read from the NDJSON
// stream of PathTap with fetch and a stream reader, newest first.

import { ApiError, getConfig, getStat, isAbort, tap, traceURL, type TapEvent, type TapQuery } from '../api';
import { clearError, setError } from '../banner';
import { h } from '../dom';
import * as fmt from '../format';
import { card, heading, type Page } from '../page';

/** MAX_ROWS caps the table: older events fall off the bottom. */
const MAX_ROWS = 500;
/** FLUSH_MS batches rendering: a busy stream redraws a few times a second. */
const FLUSH_MS = 150;
const METHODS = ['', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

type State = 'idle' | 'streaming' | 'stopped' | 'ended' | 'error';

export function tapPage(root: HTMLElement, query: URLSearchParams): Page {
  const nsList = h('datalist', { id: 'tap-namespaces' });
  const field = (label: string, input: HTMLElement) => h('label', {}, h('span', {}, label), input);
  const namespace = h('input', {
    name: 'namespace',
    'data-testid': 'tap-namespace',
    list: 'tap-namespaces',
    placeholder: 'shop',
    required: true,
    value: query.get('namespace') ?? '',
  });
  const resource = h('input', {
    name: 'resource',
    'data-testid': 'tap-resource',
    placeholder: 'deploy/web',
    required: true,
    pattern: '[a-z]+/\\S+',
    title: 'KIND/NAME: deploy/NAME, pod/NAME or ns/NAME',
    value: query.get('resource') ?? '',
  });
  const method = h(
    'select',
    { name: 'method', 'data-testid': 'tap-method' },
    ...METHODS.map((m) => h('option', { value: m, selected: m === (query.get('method') ?? '') }, m || 'any')),
  );
  const path = h('input', {
    name: 'path',
    'data-testid': 'tap-path',
    placeholder: '/api',
    value: query.get('path') ?? '',
  });
  const authority = h('input', {
    name: 'authority',
    'data-testid': 'tap-authority',
    placeholder: 'web.shop.svc:80',
    value: query.get('authority') ?? '',
  });
  const start = h('button', { type: 'submit', class: 'primary', 'data-testid': 'tap-start' }, 'Start');
  const stop = h('button', { type: 'button', 'data-testid': 'tap-stop', disabled: true }, 'Stop');
  const clear = h('button', { type: 'button', 'data-testid': 'tap-clear' }, 'Clear');
  const status = h(
    'span',
    { class: 'tap-status', 'data-testid': 'tap-status', 'data-state': 'idle', 'data-events': 0 },
    'idle',
  );
  const form = h(
    'form',
    { class: 'tap-form', 'data-testid': 'tap-form' },
    field('Namespace', namespace),
    field('Resource', resource),
    field('Method', method),
    field('Path prefix', path),
    field('Authority', authority),
    h('div', { class: 'actions' }, start, stop, clear),
    nsList,
  );

  const tbody = h('tbody', { 'data-testid': 'tap-rows' });
  const table = h(
    'div',
    { class: 'table-wrap tap-wrap' },
    h(
      'table',
      { class: 'stat tap', 'data-testid': 'tap-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['Time', 'Dir', 'Pod', 'Event', 'Method', 'Authority', 'Path', 'Src → Dst', 'TLS'].map((t) =>
            h('th', {}, t),
          ),
          h('th', { class: 'num' }, 'Status'),
          h('th', { class: 'num' }, 'Latency'),
          h('th', {}, 'Trace'),
        ),
      ),
      tbody,
    ),
  );
  const emptyRow = () =>
    h(
      'tr',
      { class: 'placeholder' },
      h('td', { colspan: 12, class: 'empty' }, 'No event yet. Start a tap to see requests as they happen.'),
    );
  tbody.append(emptyRow());

  root.append(
    heading([{ label: 'Tap' }], status),
    h('section', { class: 'card' }, form),
    card('Events', table, h('span', { class: 'hint' }, `newest first, last ${MAX_ROWS} kept`)),
  );

  let ctl: AbortController | undefined;
  let events = 0;
  let failed = false;
  let pending: TapEvent[] = [];
  let flushTimer: number | undefined;
  /** jaegerUrl, once the dashboard said, makes trace IDs links to Jaeger. */
  let jaegerUrl: string | undefined;

  function setState(s: State, detail = ''): void {
    status.dataset.state = s;
    status.dataset.events = String(events);
    status.className = `tap-status tap-${s}`;
    status.textContent = `${s}${detail ? ` · ${detail}` : ''} · ${events} event${events === 1 ? '' : 's'}`;
    const running = s === 'streaming';
    start.disabled = running;
    stop.disabled = !running;
  }

  function flush(): void {
    flushTimer = undefined;
    if (pending.length === 0) return;
    tbody.querySelector('tr.placeholder')?.remove();
    const rows = pending.reverse().map((ev) => eventRow(ev, jaegerUrl));
    pending = [];
    tbody.prepend(...rows);
    while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild!.remove();
    setState((status.dataset.state as State) ?? 'streaming');
  }

  function onEvent(ev: TapEvent): void {
    events++;
    if (ev.type === 'error') {
      failed = true;
      setError('tap', `tap: ${ev.error ?? 'the stream failed'}`);
    }
    pending.push(ev);
    flushTimer ??= window.setTimeout(flush, FLUSH_MS);
  }

  async function run(q: TapQuery): Promise<void> {
    ctl?.abort();
    const mine = new AbortController();
    ctl = mine;
    events = 0;
    failed = false;
    clearError('tap');
    setState('streaming');
    try {
      await tap(q, mine.signal, onEvent);
      flush();
      if (ctl === mine)
        setState(failed ? 'error' : 'ended', failed ? 'the stream failed' : 'the server closed the stream');
    } catch (err) {
      flush();
      if (isAbort(err) || mine.signal.aborted) return;
      const msg = err instanceof ApiError || err instanceof Error ? err.message : String(err);
      setError('tap', `tap: ${msg}`);
      if (ctl === mine) setState('error');
    }
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q: TapQuery = {
      namespace: namespace.value.trim(),
      resource: resource.value.trim(),
      method: method.value,
      path: path.value.trim(),
      authority: authority.value.trim(),
    };
    // Keep the form in the address so the tap can be shared or reloaded,
    // without a hashchange (which would remount the page).
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v) params.set(k, v);
    history.replaceState(null, '', `#/tap?${params.toString()}`);
    void run(q);
  });
  stop.addEventListener('click', () => {
    ctl?.abort();
    ctl = undefined;
    flush();
    setState('stopped');
  });
  clear.addEventListener('click', () => {
    pending = [];
    tbody.replaceChildren(emptyRow());
  });

  // Offer the namespaces the API knows, once; failing here is not worth a banner.
  const nsCtl = new AbortController();
  getConfig(nsCtl.signal)
    .then((cfg) => {
      jaegerUrl = cfg.jaegerUrl;
    })
    .catch(() => {});
  getStat({ kind: 'ns' }, nsCtl.signal)
    .then((list) => {
      nsList.replaceChildren(...(list.rows ?? []).map((r) => h('option', { value: r.resource.name })));
    })
    .catch(() => {});

  return {
    dispose: () => {
      nsCtl.abort();
      ctl?.abort();
      window.clearTimeout(flushTimer);
    },
  };
}

/**
 * traceCell shows a sampled request's trace ID, short, as a link to its
 * trace in Jaeger when the dashboard has Jaeger: a new tab, with no
 * window.opener and no Referer for it.
 */
function traceCell(ev: TapEvent, jaegerUrl: string | undefined): HTMLTableCellElement {
  const id = ev.traceId;
  if (!id) return h('td', { class: 'trace' });
  const short = id.slice(0, 8);
  const href = traceURL(jaegerUrl, id);
  if (!href) return h('td', { class: 'trace', title: `trace ${id}` }, short);
  return h(
    'td',
    { class: 'trace' },
    h(
      'a',
      {
        href,
        target: '_blank',
        rel: 'noopener noreferrer',
        title: `trace ${id} in Jaeger`,
        'data-testid': 'tap-trace',
      },
      short,
    ),
  );
}

function eventRow(ev: TapEvent, jaegerUrl: string | undefined): HTMLTableRowElement {
  if (ev.type === 'error') {
    return h(
      'tr',
      { 'data-testid': 'tap-row', 'data-type': 'error', class: 'tap-error' },
      h('td', { class: 'time' }, ev.time ? fmt.clockMs(ev.time) : fmt.NONE),
      h('td', { colspan: 11 }, `error: ${ev.error ?? ''}`),
    );
  }
  const id = ev.direction === 'inbound' ? ev.clientId : ev.serverId;
  const tls = ev.clientId || ev.serverId;
  const isRsp = ev.type === 'response';
  const statusCls = isRsp ? (ev.success === false ? 'sr-bad' : 'sr-good') : '';
  let statusText = '';
  if (isRsp) {
    statusText = String(ev.status ?? fmt.NONE);
    if (ev.grpcStatus !== undefined && ev.grpcStatus !== null) statusText += ` / grpc ${ev.grpcStatus}`;
  }
  return h(
    'tr',
    { 'data-testid': 'tap-row', 'data-type': ev.type, 'data-id': ev.id, class: isRsp ? 'tap-rsp' : 'tap-req' },
    h('td', { class: 'time' }, fmt.clockMs(ev.time)),
    h('td', {}, ev.direction === 'inbound' ? 'in' : ev.direction === 'outbound' ? 'out' : ev.direction),
    h('td', { class: 'pod', title: `${ev.namespace}/${ev.pod}` }, ev.pod),
    h('td', {}, h('span', { class: `tag ${isRsp ? 'tag-rsp' : 'tag-req'}` }, isRsp ? 'rsp' : 'req')),
    h('td', {}, ev.method),
    h('td', { class: 'auth' }, ev.authority),
    h('td', { class: 'path', title: ev.path }, ev.path),
    h(
      'td',
      { class: 'addr', title: ev.dstWorkload ? `server: ${ev.dstWorkload}` : undefined },
      `${ev.src} → ${ev.dst}`,
    ),
    h(
      'td',
      { title: id || undefined },
      tls
        ? h('span', { class: 'tag tag-mtls' }, id ? fmt.identityName(id) : 'mTLS')
        : h('span', { class: 'tag tag-plain' }, 'plain'),
    ),
    h('td', { class: `num ${statusCls}` }, statusText),
    h('td', { class: 'num' }, isRsp ? fmt.latency(ev.latencyMs) : ''),
    traceCell(ev, jaegerUrl),
  );
}
