// How figures read on the page. A missing figure (a nil pointer in the API:
// no request in the window) shows as an en dash, never as 0.

export const NONE = '–';

export function rps(v: number): string {
  if (v === 0) return '0';
  if (v < 0.1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 1000) return v.toFixed(1);
  return Math.round(v).toLocaleString('en-US');
}

export function successRate(v: number | null | undefined): string {
  if (v === null || v === undefined) return NONE;
  const pct = v * 100;
  if (pct === 100) return '100%';
  return `${pct.toFixed(2)}%`;
}

/** successClass grades a success rate for colour: good, warn or bad. */
export function successClass(v: number | null | undefined): string {
  if (v === null || v === undefined) return 'sr-none';
  if (v >= 0.99) return 'sr-good';
  if (v >= 0.95) return 'sr-warn';
  return 'sr-bad';
}

export function latency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return NONE;
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function bytesPerSec(v: number): string {
  if (v === 0) return '0 B/s';
  const units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function clock(iso: string | Date): string {
  const d = typeof iso === 'string' ? new Date(iso) : iso;
  if (Number.isNaN(d.getTime())) return NONE;
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

/** clockMs is a wall-clock time with milliseconds, for tap events. */
export function clockMs(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return NONE;
  return `${clock(d)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** shortKind is kubectl's short name of a Resource kind. */
export function shortKind(kind: string): string {
  switch (kind) {
    case 'deployment':
      return 'deploy';
    case 'statefulset':
      return 'sts';
    case 'daemonset':
      return 'ds';
    case 'service':
      return 'svc';
    case 'namespace':
      return 'ns';
    case 'pod':
      return 'po';
    default:
      return kind;
  }
}

/** identityName shortens a SPIFFE ID to its ns/sa part, keeping the full ID for a tooltip. */
export function identityName(id: string): string {
  const m = /^spiffe:\/\/[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  return m ? `${m[2]}.${m[1]}` : id;
}

/** tick writes an axis value without trailing zeros: 0, 2.5, 40, 1.2k. */
export function tick(v: number): string {
  if (Math.abs(v) >= 10000) return `${Number((v / 1000).toFixed(1))}k`;
  return String(Number(v.toFixed(2)));
}
