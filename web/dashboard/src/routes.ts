// Hash routes of the page. The page is static files, so routing lives in
// the fragment and any server can serve it.
//
//   #/                       namespaces overview
//   #/ns/NS                  one namespace: deployments and service graph
//   #/ns/NS/deploy/NAME      one deployment: live charts and edges
//   #/tap?namespace=NS&resource=deploy/NAME   live requests

import type { Resource } from './api';

export type Route =
  | { page: 'overview' }
  | { page: 'namespace'; namespace: string }
  | { page: 'workload'; namespace: string; name: string }
  | { page: 'tap'; query: URLSearchParams }
  | { page: 'notfound'; hash: string };

export function parse(hash: string): Route {
  const raw = hash.replace(/^#/, '');
  const q = raw.indexOf('?');
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  const parts = path
    .split('/')
    .filter((p) => p !== '')
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  if (parts.length === 0) return { page: 'overview' };
  if (parts[0] === 'tap' && parts.length === 1) return { page: 'tap', query };
  if (parts[0] === 'ns' && parts.length === 2) return { page: 'namespace', namespace: parts[1] };
  if (parts[0] === 'ns' && parts.length === 4 && parts[2] === 'deploy') {
    return { page: 'workload', namespace: parts[1], name: parts[3] };
  }
  return { page: 'notfound', hash };
}

const enc = encodeURIComponent;

export function nsHref(ns: string): string {
  return `#/ns/${enc(ns)}`;
}

export function deployHref(ns: string, name: string): string {
  return `#/ns/${enc(ns)}/deploy/${enc(name)}`;
}

export function tapHref(ns: string, resource: string): string {
  return `#/tap?${new URLSearchParams({ namespace: ns, resource }).toString()}`;
}

/** resourceHref is the page of a Resource, when the dashboard has one. */
export function resourceHref(r: Resource, fallbackNs: string): string | undefined {
  const ns = r.namespace || fallbackNs;
  if (r.kind === 'deployment' && ns) return deployHref(ns, r.name);
  if (r.kind === 'namespace') return nsHref(r.name);
  return undefined;
}
