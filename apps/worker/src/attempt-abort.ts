/**
 * How an attempt gets stopped (canceled, expired, timed out, lost, shut down):
 * the reason once it happened, a way to race work against it, and the
 * AbortSignal connectors see, made only when a connector asks for it (a
 * signal and its listeners cost more than a short job's whole run).
 */
export class AttemptAbort {
  private why: Error | undefined;
  private controller: AbortController | undefined;
  /** the reject of each race made before the abort (a settled one's reject does nothing) */
  private racers: Array<(reason: Error) => void> = [];

  get aborted(): boolean {
    return this.why !== undefined;
  }

  /** the reason it was aborted for, if it was */
  get reason(): Error | undefined {
    return this.why;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.why) this.controller.abort(this.why);
    }
    return this.controller.signal;
  }

  /** The first call wins; later ones change nothing. */
  abort(reason: Error): void {
    if (this.why) return;
    this.why = reason;
    this.controller?.abort(reason);
    const racers = this.racers;
    this.racers = [];
    for (const reject of racers) reject(reason);
  }

  throwIfAborted(): void {
    if (this.why) throw this.why;
  }

  /**
   * Resolves or rejects like `work`, or rejects with the reason as soon as the attempt is aborted.
   * `work` settling after the abort changes nothing, and its rejection then is handled (here).
   */
  race<T>(work: Promise<T>): Promise<T> {
    if (this.why) {
      work.catch(() => undefined);
      return Promise.reject(this.why);
    }
    return new Promise<T>((resolve, reject) => {
      this.racers.push(reject);
      work.then(resolve, reject);
    });
  }
}
