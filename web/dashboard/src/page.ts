// What every page shares: the lifecycle and the heading.

import { h } from './dom';

/** Page is a mounted page; dispose stops its polling and streams. */
export interface Page {
  dispose(): void;
}

export interface Crumb {
  label: string;
  href?: string;
}

/** heading is the page's breadcrumb title with a line of details at the right. */
export function heading(crumbs: Crumb[], ...right: (Node | string)[]): HTMLElement {
  const trail: (Node | string)[] = [];
  crumbs.forEach((c, i) => {
    if (i > 0) trail.push(h('span', { class: 'sep' }, '/'));
    trail.push(c.href ? h('a', { href: c.href }, c.label) : h('span', { class: 'current' }, c.label));
  });
  return h('div', { class: 'page-head' }, h('h1', {}, ...trail), h('div', { class: 'page-meta' }, ...right));
}

/** card frames a block of the page under a title. */
export function card(title: string, body: Node, ...extra: (Node | string)[]): HTMLElement {
  return h('section', { class: 'card' }, h('header', {}, h('h2', {}, title), ...extra), body);
}

/** freshness shows when data was collected, updated on each refresh. */
export function freshness(): { el: HTMLElement; set(window: string, collected: string): void } {
  const el = h('span', { class: 'freshness', 'data-testid': 'freshness' });
  return {
    el,
    set(window, collected) {
      const t = new Date(collected);
      const when =
        Number.isNaN(t.getTime()) || t.getTime() <= 0
          ? 'no scrape yet'
          : `collected ${t.toLocaleTimeString('en-GB', { hour12: false })}`;
      el.textContent = `window ${window} · ${when}`;
    },
  };
}
