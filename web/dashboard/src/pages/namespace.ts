// One namespace: its deployments and the live graph of who calls whom.

import { getEdges, getStat, type StatRow } from '../api';
import { h } from '../dom';
import { serviceGraph } from '../graph';
import { card, freshness, heading, type Page } from '../page';
import { Poller } from '../poll';
import { deployHref, resourceHref, tapHref } from '../routes';
import { statTable } from '../table';

const REFRESH_MS = 3000;

export function namespacePage(root: HTMLElement, ns: string): Page {
  const fresh = freshness();
  const table = statTable({
    rowTestId: 'deploy-row',
    nameHeader: 'Deployment',
    href: (r) => deployHref(ns, r.resource.name),
    empty: 'No deployment in this namespace.',
  });
  const graph = serviceGraph(ns, (r) => resourceHref(r, ns));
  let rows: StatRow[] = [];

  root.append(
    heading(
      [{ label: 'Namespaces', href: '#/' }, { label: ns }],
      fresh.el,
      h('a', { class: 'button', href: tapHref(ns, `ns/${ns}`) }, 'Tap namespace'),
    ),
    card('Deployments', table.el),
    card(
      'Service graph',
      graph.el,
      h('span', { class: 'hint' }, 'edges: client → server, success rate and RPS over the window'),
    ),
  );

  const stats = new Poller('stat-deploy', REFRESH_MS, async (signal) => {
    const list = await getStat({ kind: 'deploy', namespace: ns }, signal);
    rows = list.rows ?? [];
    table.update(rows);
    fresh.set(list.window, list.collected);
  });
  const edges = new Poller('edges', REFRESH_MS, async (signal) => {
    const list = await getEdges({ namespace: ns }, signal);
    graph.update(list.edges ?? [], rows);
  });
  return {
    dispose: () => {
      stats.stop();
      edges.stop();
    },
  };
}
