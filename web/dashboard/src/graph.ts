// The service graph: workloads as boxes, edges as arrows labelled with
// their success rate and whether they went over mesh TLS. The layout is
// layered, left to right, from clients to servers (a simple Sugiyama: break
// cycles, longest-path layers, a few barycenter sweeps to cut crossings).
// It is deterministic, so a refresh with the same traffic draws the same
// picture instead of a force simulation that wanders.

import type { Edge, Resource, StatRow } from './api';
import { h, s } from './dom';
import * as fmt from './format';

const NODE_W = 180;
const NODE_H = 50;
const GAP_X = 190;
const GAP_Y = 36;
const PAD = 24;

interface Node {
  key: string;
  res: Resource;
  stat?: StatRow;
  meshed: boolean;
  rank: number;
  order: number;
  x: number;
  y: number;
}

export interface Graph {
  el: HTMLElement;
  update(edges: Edge[], rows: StatRow[]): void;
}

function key(r: Resource): string {
  return `${r.kind}/${r.namespace ?? ''}/${r.name}`;
}

/**
 * serviceGraph draws the graph of one namespace. href gives the page of a
 * node, when it has one.
 */
export function serviceGraph(namespace: string, href: (r: Resource) => string | undefined): Graph {
  const host = h(
    'div',
    {
      class: 'graph',
      'data-testid': 'graph',
      'data-nodes': 0,
      'data-edges': 0,
      'data-updates': 0,
    },
    h('p', { class: 'empty' }, 'Loading…'),
  );
  let updates = 0;

  function update(edges: Edge[], rows: StatRow[]): void {
    const nodes = new Map<string, Node>();
    const add = (res: Resource, stat?: StatRow): Node => {
      const k = key(res);
      let n = nodes.get(k);
      if (!n) {
        n = { key: k, res, stat, meshed: false, rank: 0, order: 0, x: 0, y: 0 };
        nodes.set(k, n);
      }
      if (stat) n.stat = stat;
      return n;
    };
    for (const r of rows)
      add({ ...r.resource, namespace: r.resource.namespace ?? namespace }, r).meshed = r.meshedPods > 0;
    for (const e of edges) {
      add(e.src).meshed = true;
      const d = add(e.dst);
      if (e.dstId !== '') d.meshed = true;
    }
    layout([...nodes.values()], edges);
    draw(host, [...nodes.values()], edges, namespace, href);
    updates++;
    host.dataset.nodes = String(nodes.size);
    host.dataset.edges = String(edges.length);
    host.dataset.updates = String(updates);
  }

  return { el: host, update };
}

function layout(nodes: Node[], edges: Edge[]): void {
  nodes.sort((a, b) => a.key.localeCompare(b.key));
  const byKey = new Map(nodes.map((n) => [n.key, n]));
  const out = new Map<string, string[]>();
  for (const e of edges) {
    const a = key(e.src);
    const b = key(e.dst);
    if (a === b) continue;
    if (!out.has(a)) out.set(a, []);
    out.get(a)!.push(b);
  }
  for (const list of out.values()) list.sort();

  // Break cycles: a depth-first search drops the edges that point back to
  // a node on the current path.
  const state = new Map<string, 1 | 2>();
  const forward = new Map<string, string[]>();
  const visit = (k: string): void => {
    state.set(k, 1);
    for (const t of out.get(k) ?? []) {
      if (state.get(t) === 1) continue;
      if (!forward.has(k)) forward.set(k, []);
      forward.get(k)!.push(t);
      if (!state.has(t)) visit(t);
    }
    state.set(k, 2);
  };
  // Start from the clients nobody calls, so a cycle is cut at its edge back
  // towards them (a callback), not at the main flow.
  const called = new Set([...out.values()].flat());
  for (const n of nodes) if (!called.has(n.key) && !state.has(n.key)) visit(n.key);
  for (const n of nodes) if (!state.has(n.key)) visit(n.key);

  // Longest path from the sources gives each node its column.
  const indeg = new Map<string, number>(nodes.map((n) => [n.key, 0]));
  for (const ts of forward.values()) for (const t of ts) indeg.set(t, (indeg.get(t) ?? 0) + 1);
  const queue = nodes.filter((n) => indeg.get(n.key) === 0).map((n) => n.key);
  while (queue.length > 0) {
    const k = queue.shift()!;
    const n = byKey.get(k)!;
    for (const t of forward.get(k) ?? []) {
      const m = byKey.get(t)!;
      m.rank = Math.max(m.rank, n.rank + 1);
      indeg.set(t, indeg.get(t)! - 1);
      if (indeg.get(t) === 0) queue.push(t);
    }
  }

  // Nodes without any edge go after the others in the first column.
  const linked = new Set<string>();
  for (const e of edges) {
    linked.add(key(e.src));
    linked.add(key(e.dst));
  }
  const layers: Node[][] = [];
  for (const n of nodes) (layers[n.rank] ??= []).push(n);
  for (const layer of layers) {
    if (!layer) continue;
    layer.sort((a, b) => Number(linked.has(b.key)) - Number(linked.has(a.key)) || a.key.localeCompare(b.key));
    layer.forEach((n, i) => (n.order = i));
  }

  // Barycenter sweeps: order each layer by the mean position of its
  // neighbours in the previous one, down then up.
  const preds = new Map<string, Node[]>();
  const succs = new Map<string, Node[]>();
  for (const [a, ts] of forward) {
    for (const b of ts) {
      (preds.get(b) ?? preds.set(b, []).get(b)!).push(byKey.get(a)!);
      (succs.get(a) ?? succs.set(a, []).get(a)!).push(byKey.get(b)!);
    }
  }
  const sweep = (layer: Node[], nbrs: Map<string, Node[]>): void => {
    const bary = new Map<Node, number>();
    for (const n of layer) {
      const ns = nbrs.get(n.key);
      bary.set(n, ns && ns.length > 0 ? ns.reduce((sum, m) => sum + m.order, 0) / ns.length : n.order);
    }
    layer.sort((a, b) => bary.get(a)! - bary.get(b)! || a.order - b.order);
    layer.forEach((n, i) => (n.order = i));
  };
  for (let pass = 0; pass < 4; pass++) {
    for (let i = 1; i < layers.length; i++) if (layers[i]) sweep(layers[i], preds);
    for (let i = layers.length - 2; i >= 0; i--) if (layers[i]) sweep(layers[i], succs);
  }

  const tallest = Math.max(1, ...layers.map((l) => l?.length ?? 0));
  const fullH = tallest * NODE_H + (tallest - 1) * GAP_Y;
  for (const layer of layers) {
    if (!layer) continue;
    const hgt = layer.length * NODE_H + (layer.length - 1) * GAP_Y;
    const top = PAD + (fullH - hgt) / 2;
    for (const n of layer) {
      n.x = PAD + n.rank * (NODE_W + GAP_X);
      n.y = top + n.order * (NODE_H + GAP_Y);
    }
  }
}

function draw(
  host: HTMLElement,
  nodes: Node[],
  edges: Edge[],
  namespace: string,
  href: (r: Resource) => string | undefined,
): void {
  if (nodes.length === 0) {
    host.replaceChildren(h('p', { class: 'empty' }, 'No workload and no traffic in this namespace yet.'));
    return;
  }
  const byKey = new Map(nodes.map((n) => [n.key, n]));
  const paths = new Map(edges.map((e) => [e, edgePath(byKey.get(key(e.src))!, byKey.get(key(e.dst))!)]));
  const width = Math.max(...nodes.map((n) => n.x + NODE_W)) + PAD;
  // Room below the lowest node or back edge for the legend.
  const bottom = Math.max(...nodes.map((n) => n.y + NODE_H), ...[...paths.values()].map((p) => p.bottom));
  const height = bottom + PAD + 24;
  const svg = s('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': `service graph of namespace ${namespace}`,
  });
  svg.append(s('defs', {}, marker('arrow-mtls', 'edge-mtls'), marker('arrow-plain', 'edge-plain')));

  const edgeLayer = s('g', { class: 'edges' });
  const labelLayer = s('g', { class: 'labels' });
  const nodeLayer = s('g', { class: 'nodes' });
  svg.append(edgeLayer, nodeLayer, labelLayer);

  const sorted = [...edges].sort((a, b) => (key(a.src) + key(a.dst)).localeCompare(key(b.src) + key(b.dst)));
  for (const e of sorted) {
    const { d, mx, my } = paths.get(e)!;
    const cls = e.mtls ? 'edge-mtls' : 'edge-plain';
    const widthPx = Math.min(5, 1.5 + Math.log10(1 + e.rps));
    const title = s(
      'title',
      {},
      `${resName(e.src, namespace)} → ${resName(e.dst, namespace)}\n` +
        `success ${fmt.successRate(e.successRate)}, ${fmt.rps(e.rps)} rps, p99 ${fmt.latency(e.latencyP99Ms)}\n` +
        (e.mtls ? `mTLS: ${e.srcId} → ${e.dstId}` : 'plain text (not all requests over mesh TLS)'),
    );
    const g = s(
      'g',
      {
        class: `edge ${cls}`,
        'data-testid': 'graph-edge',
        'data-src': `${fmt.shortKind(e.src.kind)}/${e.src.name}`,
        'data-src-namespace': e.src.namespace ?? namespace,
        'data-dst': `${fmt.shortKind(e.dst.kind)}/${e.dst.name}`,
        'data-dst-namespace': e.dst.namespace ?? namespace,
        'data-mtls': String(e.mtls),
      },
      title,
      s('path', { d, 'stroke-width': widthPx.toFixed(1), 'marker-end': `url(#arrow-${e.mtls ? 'mtls' : 'plain'})` }),
    );
    edgeLayer.append(g);
    labelLayer.append(edgeLabel(e, mx, my));
  }

  for (const n of nodes) nodeLayer.append(nodeBox(n, namespace, href));

  svg.append(legend(height));
  host.replaceChildren(svg);
  // Size and centre the labels now that their text can be measured.
  for (const lbl of labelLayer.querySelectorAll<SVGGElement>('g.edge-label')) {
    const text = lbl.querySelector('text')!;
    const lock = lbl.querySelector('g.lock');
    const icon = lock ? 13 : 0;
    const measured = text.getComputedTextLength() || (text.textContent ?? '').length * 6.4;
    const w = measured + icon + 14;
    const left = -w / 2;
    const bg = lbl.querySelector('rect')!;
    bg.setAttribute('width', w.toFixed(1));
    bg.setAttribute('x', left.toFixed(1));
    lock?.setAttribute('transform', `translate(${(left + 7).toFixed(1)},-6.5)`);
    text.setAttribute('x', (left + 7 + icon).toFixed(1));
  }
}

function marker(id: string, cls: string): SVGMarkerElement {
  return s(
    'marker',
    {
      id,
      class: cls,
      viewBox: '0 0 10 10',
      refX: 9,
      refY: 5,
      markerWidth: 7,
      markerHeight: 7,
      markerUnits: 'userSpaceOnUse',
      orient: 'auto',
    },
    s('path', { d: 'M0,0 L10,5 L0,10 z' }),
  );
}

/** edgePath is the curve of an edge, the middle where its label goes, and its lowest y. */
function edgePath(a: Node, b: Node): { d: string; mx: number; my: number; bottom: number } {
  if (a === b) {
    // A workload calling itself: a loop over the top of its box.
    const x = a.x + NODE_W - 30;
    const y = a.y;
    return {
      d: `M${x},${y} C${x - 10},${y - 46} ${x + 40},${y - 46} ${x + 20},${y}`,
      mx: x + 10,
      my: y - 36,
      bottom: y,
    };
  }
  if (b.rank > a.rank) {
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x - 2;
    const y2 = b.y + NODE_H / 2;
    const c = (x2 - x1) / 2;
    return {
      d: `M${x1},${y1} C${x1 + c},${y1} ${x2 - c},${y2} ${x2},${y2}`,
      mx: (x1 + x2) / 2,
      my: (y1 + y2) / 2,
      bottom: Math.max(y1, y2),
    };
  }
  // Back or same-column edge: leave from the bottom, arc under, enter from the bottom.
  const x1 = a.x + NODE_W / 2 + 12;
  const y1 = a.y + NODE_H;
  const x2 = b.x + NODE_W / 2 - 12;
  const y2 = b.y + NODE_H + 2;
  const dip = Math.max(y1, y2) + GAP_Y + 10;
  return {
    d: `M${x1},${y1} C${x1},${dip} ${x2},${dip} ${x2},${y2}`,
    mx: (x1 + x2) / 2,
    my: Math.max(y1, y2) + (GAP_Y + 10) * 0.75,
    bottom: dip + 10,
  };
}

function edgeLabel(e: Edge, x: number, y: number): SVGGElement {
  const text = `${e.mtls ? '' : 'plain · '}${fmt.successRate(e.successRate)} · ${fmt.rps(e.rps)} rps`;
  return s(
    'g',
    {
      class: `edge-label ${e.mtls ? 'edge-mtls' : 'edge-plain'}`,
      'data-mtls': String(e.mtls),
      transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`,
    },
    s('rect', { x: -40, y: -10, width: 80, height: 20, rx: 10 }),
    e.mtls ? lockIcon() : null,
    s('text', { x: 0, y: 4, class: fmt.successClass(e.successRate) }, text),
  );
}

/** lockIcon is a 9x11 padlock centred on the label's line, drawn in SVG (no emoji font needed). */
function lockIcon(): SVGGElement {
  return s(
    'g',
    { class: 'lock', transform: 'translate(0,-6)' },
    s('title', {}, 'mTLS'),
    s('path', { class: 'shackle', d: 'M2,5 V3.5 a2.5,2.5 0 0 1 5,0 V5' }),
    s('rect', { class: 'body', x: 0.5, y: 5, width: 8, height: 6.5, rx: 1.2 }),
  );
}

function nodeBox(n: Node, namespace: string, href: (r: Resource) => string | undefined): SVGElement {
  const other = n.res.namespace && n.res.namespace !== namespace ? n.res.namespace : '';
  let line2: string;
  if (n.stat && n.stat.successRate !== null)
    line2 = `${fmt.successRate(n.stat.successRate)} · ${fmt.rps(n.stat.rps)} rps`;
  else if (n.stat) line2 = 'no inbound requests';
  else line2 = fmt.shortKind(n.res.kind);
  // The top-right corner says what is unusual about the node.
  const tag = !n.meshed ? 'unmeshed' : other ? `ns ${other}` : '';
  const g = s(
    'g',
    {
      class: `node${n.meshed ? '' : ' unmeshed'}`,
      'data-testid': 'graph-node',
      'data-name': `${fmt.shortKind(n.res.kind)}/${n.res.name}`,
      'data-namespace': n.res.namespace ?? namespace,
      transform: `translate(${n.x},${n.y})`,
    },
    s('title', {}, `${n.res.kind} ${n.res.namespace ? `${n.res.namespace}/` : ''}${n.res.name}`),
    s('rect', { width: NODE_W, height: NODE_H, rx: 8 }),
    s('text', { class: 'node-name', x: 12, y: 21 }, truncate(n.res.name, tag ? 14 : 22)),
    tag ? s('text', { class: 'node-tag', x: NODE_W - 10, y: 19, 'text-anchor': 'end' }, truncate(tag, 14)) : null,
    s(
      'text',
      { class: `node-sub ${n.stat ? fmt.successClass(n.stat.successRate) : ''}`, x: 12, y: 38 },
      truncate(line2, 28),
    ),
  );
  const link = href(n.res);
  return link ? s('a', { href: link }, g) : g;
}

function legend(height: number): SVGGElement {
  const y = height - 14;
  return s(
    'g',
    { class: 'legend', transform: `translate(${PAD},${y})` },
    s('line', { class: 'edge-mtls', x1: 0, y1: 0, x2: 28, y2: 0 }),
    s('text', { x: 34, y: 4 }, 'mTLS'),
    s('line', { class: 'edge-plain', x1: 84, y1: 0, x2: 112, y2: 0 }),
    s('text', { x: 118, y: 4 }, 'plain text'),
  );
}

/** resName is KIND/NAME, with the namespace when it is not the page's. */
function resName(r: Resource, namespace: string): string {
  const ns = r.namespace && r.namespace !== namespace ? `${r.namespace}/` : '';
  return `${fmt.shortKind(r.kind)}/${ns}${r.name}`;
}

function truncate(t: string, n: number): string {
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}
