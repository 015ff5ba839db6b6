// The stat table: one row per resource with the golden signals, shared by
// the namespaces overview and the namespace page.

import type { StatRow } from './api';
import { h } from './dom';
import * as fmt from './format';

export interface StatTableOptions {
  /** testid of each row, e.g. "deploy-row"; the row also carries data-name. */
  rowTestId: string;
  /** nameHeader heads the first column. */
  nameHeader: string;
  /** href links a row's name to its page. */
  href?: (row: StatRow) => string | undefined;
  /** empty is shown when there is no row. */
  empty: string;
}

export interface StatTable {
  el: HTMLElement;
  update(rows: StatRow[]): void;
}

const headers = ['Meshed', 'Success', 'RPS', 'P50', 'P95', 'P99', 'TCP conns'];

export function statTable(opts: StatTableOptions): StatTable {
  const tbody = h('tbody', {}, h('tr', {}, h('td', { colspan: headers.length + 1, class: 'empty' }, 'Loading…')));
  const table = h(
    'table',
    { class: 'stat' },
    h('thead', {}, h('tr', {}, h('th', {}, opts.nameHeader), ...headers.map((t) => h('th', { class: 'num' }, t)))),
    tbody,
  );
  const wrap = h('div', { class: 'table-wrap' }, table);

  function update(rows: StatRow[]): void {
    const sorted = [...rows].sort((a, b) => a.resource.name.localeCompare(b.resource.name));
    if (sorted.length === 0) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: headers.length + 1, class: 'empty' }, opts.empty)));
      return;
    }
    tbody.replaceChildren(...sorted.map((r) => statRow(r, opts)));
  }

  return { el: wrap, update };
}

export function statRow(r: StatRow, opts: Pick<StatTableOptions, 'rowTestId' | 'href'>): HTMLTableRowElement {
  const href = opts.href?.(r);
  const name = href ? h('a', { href }, r.resource.name) : r.resource.name;
  const unmeshed = r.meshedPods === 0;
  return h(
    'tr',
    { 'data-testid': opts.rowTestId, 'data-name': r.resource.name, class: unmeshed ? 'unmeshed' : undefined },
    h('td', { class: 'name' }, name),
    h('td', { class: 'num' }, `${r.meshedPods}/${r.totalPods}`),
    h('td', { class: `num ${fmt.successClass(r.successRate)}` }, fmt.successRate(r.successRate)),
    h('td', { class: 'num' }, fmt.rps(r.rps)),
    h('td', { class: 'num' }, fmt.latency(r.latencyP50Ms)),
    h('td', { class: 'num' }, fmt.latency(r.latencyP95Ms)),
    h('td', { class: 'num' }, fmt.latency(r.latencyP99Ms)),
    h('td', { class: 'num' }, r.tcpConnections),
  );
}
