// Poller runs a fetch now and again every interval, one at a time: the next
// run starts interval after the previous one ended, so a slow API is never
// asked twice at once. Failures go to the banner under the poller's key and
// are retried on the same schedule.

import { isAbort } from './api';
import { clearError, setError } from './banner';

export class Poller {
  private readonly ctl = new AbortController();
  private timer: number | undefined;

  constructor(
    private readonly key: string,
    private readonly intervalMs: number,
    private readonly run: (signal: AbortSignal) => Promise<void>,
  ) {
    void this.tick();
  }

  private async tick(): Promise<void> {
    try {
      await this.run(this.ctl.signal);
      if (!this.ctl.signal.aborted) clearError(this.key);
    } catch (err) {
      if (isAbort(err) || this.ctl.signal.aborted) return;
      setError(this.key, err instanceof Error ? err.message : String(err));
    }
    if (!this.ctl.signal.aborted) {
      this.timer = window.setTimeout(() => void this.tick(), this.intervalMs);
    }
  }

  /** stop cancels the request in flight and every later one. */
  stop(): void {
    this.ctl.abort();
    window.clearTimeout(this.timer);
  }
}
