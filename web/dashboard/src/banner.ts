// The error banner under the header. Each source of data on a page (a
// poller, the tap stream) reports under its own key, so one recovering
// source does not hide another's failure.

import { h } from './dom';

const errors = new Map<string, string>();

function render(): void {
  const el = document.getElementById('banner');
  if (!el) return;
  if (errors.size === 0) {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  el.hidden = false;
  el.replaceChildren(
    h('strong', {}, errors.size === 1 ? 'Viz API error' : `Viz API errors (${errors.size})`),
    h('ul', {}, ...[...errors.values()].map((msg) => h('li', { 'data-testid': 'error-message' }, msg))),
  );
}

export function setError(key: string, message: string): void {
  if (errors.get(key) === message) return;
  errors.set(key, message);
  render();
}

export function clearError(key: string): void {
  if (errors.delete(key)) render();
}

/** clearAll drops every message: called when the page changes. */
export function clearAll(): void {
  errors.clear();
  render();
}
