// The namespaces overview: every namespace's inbound traffic.

import { getStat } from '../api';
import { card, freshness, heading, type Page } from '../page';
import { Poller } from '../poll';
import { nsHref } from '../routes';
import { statTable } from '../table';

const REFRESH_MS = 3000;

export function overview(root: HTMLElement): Page {
  const fresh = freshness();
  const table = statTable({
    rowTestId: 'ns-row',
    nameHeader: 'Namespace',
    href: (r) => nsHref(r.resource.name),
    empty: 'No namespace answered yet.',
  });
  root.append(heading([{ label: 'Namespaces' }], fresh.el), card('Inbound traffic by namespace', table.el));
  const poller = new Poller('stat-ns', REFRESH_MS, async (signal) => {
    const list = await getStat({ kind: 'ns' }, signal);
    table.update(list.rows ?? []);
    fresh.set(list.window, list.collected);
  });
  return { dispose: () => poller.stop() };
}
