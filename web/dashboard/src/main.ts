// The entry point: mount the page the hash names, and swap pages on
// navigation, stopping the old page's polling first.

import './style.css';
import { clearAll } from './banner';
import { h } from './dom';
import type { Page } from './page';
import { heading } from './page';
import { namespacePage } from './pages/namespace';
import { overview } from './pages/overview';
import { tapPage } from './pages/tap';
import { workloadPage } from './pages/workload';
import { parse } from './routes';

const app = document.getElementById('app')!;
let current: Page | undefined;

function mount(): void {
  current?.dispose();
  current = undefined;
  clearAll();
  app.replaceChildren();
  const route = parse(location.hash);
  const nav = route.page === 'tap' ? 'tap' : route.page === 'notfound' ? '' : 'overview';
  for (const a of document.querySelectorAll<HTMLAnchorElement>('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === nav);
  }
  const root = h('div', { class: 'page', 'data-page': route.page });
  app.append(root);
  switch (route.page) {
    case 'overview':
      document.title = 'mesh viz';
      current = overview(root);
      break;
    case 'namespace':
      document.title = `${route.namespace} · mesh viz`;
      current = namespacePage(root, route.namespace);
      break;
    case 'workload':
      document.title = `deploy/${route.name} · mesh viz`;
      current = workloadPage(root, route.namespace, route.name);
      break;
    case 'tap':
      document.title = 'tap · mesh viz';
      current = tapPage(root, route.query);
      break;
    case 'notfound':
      document.title = 'mesh viz';
      root.append(
        heading([{ label: 'Not found' }]),
        h('p', {}, `No page at ${route.hash}. `, h('a', { href: '#/' }, 'Back to the namespaces.')),
      );
      break;
  }
  window.scrollTo(0, 0);
}

window.addEventListener('hashchange', mount);
mount();
