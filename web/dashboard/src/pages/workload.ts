// One deployment: live charts over the last minutes, its current stats,
// and the edges into and out of it.

import { getEdges, getSeries, getStat, type Edge, type Resource } from '../api';
import { timeChart } from '../chart';
import { h } from '../dom';
import * as fmt from '../format';
import { card, freshness, heading, type Page } from '../page';
import { Poller } from '../poll';
import { nsHref, resourceHref, tapHref } from '../routes';
import { statTable } from '../table';

const REFRESH_MS = 5000;
const WINDOW = '10m';
const STEP = '10s';

export function workloadPage(root: HTMLElement, ns: string, name: string): Page {
  const fresh = freshness();
  const stat = statTable({
    rowTestId: 'workload-stat-row',
    nameHeader: 'Deployment',
    empty: 'No stats for this deployment.',
  });
  const rps = timeChart({
    testId: 'chart-rps',
    title: 'Requests per second',
    lines: [{ label: 'RPS', color: '#2563eb', value: (p) => p.rps }],
    format: fmt.rps,
    tick: fmt.tick,
  });
  const success = timeChart({
    testId: 'chart-success',
    title: 'Success rate',
    lines: [
      { label: 'success', color: '#16a34a', value: (p) => (p.successRate === null ? null : p.successRate * 100) },
    ],
    format: (v) => fmt.successRate(v / 100),
    tick: (v) => `${fmt.tick(v)}%`,
    range: (min) => [Math.max(0, Math.min(95, Math.floor((min - 1) / 5) * 5)), 100],
  });
  const latency = timeChart({
    testId: 'chart-latency',
    title: 'Latency',
    lines: [
      { label: 'p50', color: '#2563eb', value: (p) => p.latencyP50Ms },
      { label: 'p95', color: '#d97706', value: (p) => p.latencyP95Ms },
      { label: 'p99', color: '#dc2626', value: (p) => p.latencyP99Ms },
    ],
    format: fmt.latency,
    tick: (v) => (v === 0 ? '0' : fmt.latency(v)),
  });
  const inbound = edgeTable('in', 'From', ns);
  const outbound = edgeTable('out', 'To', ns);

  root.append(
    heading(
      [{ label: 'Namespaces', href: '#/' }, { label: ns, href: nsHref(ns) }, { label: `deploy/${name}` }],
      fresh.el,
      h('a', { class: 'button', href: tapHref(ns, `deploy/${name}`) }, 'Tap'),
    ),
    card('Current', stat.el),
    h('div', { class: 'charts' }, rps.el, success.el, latency.el),
    h('div', { class: 'two-col' }, card('Inbound', inbound.el), card('Outbound', outbound.el)),
  );

  const series = new Poller('series', REFRESH_MS, async (signal) => {
    const s = await getSeries({ kind: 'deploy', namespace: ns, name, window: WINDOW, step: STEP }, signal);
    const points = s.points ?? [];
    rps.update(points);
    success.update(points);
    latency.update(points);
  });
  const stats = new Poller('stat', REFRESH_MS, async (signal) => {
    const list = await getStat({ kind: 'deploy', namespace: ns, name }, signal);
    stat.update(list.rows ?? []);
    fresh.set(list.window, list.collected);
  });
  // Every namespace: callers from other namespaces are inbound edges too.
  const edges = new Poller('edges', REFRESH_MS, async (signal) => {
    const list = await getEdges({}, signal);
    const all = list.edges ?? [];
    const isSelf = (r: Resource) => r.kind === 'deployment' && r.name === name && (r.namespace ?? ns) === ns;
    inbound.update(
      all.filter((e) => isSelf(e.dst)),
      (e) => e.src,
    );
    outbound.update(
      all.filter((e) => isSelf(e.src)),
      (e) => e.dst,
    );
  });

  return {
    dispose: () => {
      series.stop();
      stats.stop();
      edges.stop();
      rps.destroy();
      success.destroy();
      latency.destroy();
    },
  };
}

function edgeTable(dir: 'in' | 'out', peerHeader: string, ns: string) {
  const tbody = h('tbody', {}, h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'Loading…')));
  const el = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'stat' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, peerHeader),
          h('th', {}, 'Identity'),
          h('th', {}, 'TLS'),
          h('th', { class: 'num' }, 'Success'),
          h('th', { class: 'num' }, 'RPS'),
          h('th', { class: 'num' }, 'P50'),
          h('th', { class: 'num' }, 'P99'),
        ),
      ),
      tbody,
    ),
  );

  function update(edges: Edge[], peer: (e: Edge) => Resource): void {
    if (edges.length === 0) {
      tbody.replaceChildren(
        h('tr', {}, h('td', { colspan: 7, class: 'empty' }, `No ${dir}bound traffic in the window.`)),
      );
      return;
    }
    const sorted = [...edges].sort((a, b) => peer(a).name.localeCompare(peer(b).name));
    tbody.replaceChildren(
      ...sorted.map((e) => {
        const p = peer(e);
        const label = `${fmt.shortKind(p.kind)}/${p.namespace && p.namespace !== ns ? `${p.namespace}/` : ''}${p.name}`;
        const href = resourceHref(p, ns);
        const id = dir === 'in' ? e.srcId : e.dstId;
        return h(
          'tr',
          { 'data-testid': `edge-${dir}-row`, 'data-name': label },
          h('td', { class: 'name' }, href ? h('a', { href }, label) : label),
          h('td', { class: 'ident', title: id || undefined }, id ? fmt.identityName(id) : fmt.NONE),
          h(
            'td',
            {},
            e.mtls ? h('span', { class: 'tag tag-mtls' }, 'mTLS') : h('span', { class: 'tag tag-plain' }, 'plain'),
          ),
          h('td', { class: `num ${fmt.successClass(e.successRate)}` }, fmt.successRate(e.successRate)),
          h('td', { class: 'num' }, fmt.rps(e.rps)),
          h('td', { class: 'num' }, fmt.latency(e.latencyP50Ms)),
          h('td', { class: 'num' }, fmt.latency(e.latencyP99Ms)),
        );
      }),
    );
  }

  return { el, update };
}
