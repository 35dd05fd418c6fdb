import { useEffect, useState } from 'react';

/**
 * What `load` answers, loaded at once and again every `everyMs` while the view
 * is shown (undefined until the first answer). A failed load keeps the last
 * answer and is logged with `what`. For reports the live feed does not carry
 * (GET /v1/pools, GET /v1/shards).
 */
export function usePolled<T>(load: () => Promise<T>, everyMs: number, what: string, deps: readonly unknown[]): T | undefined {
  const [value, setValue] = useState<T | undefined>();
  useEffect(() => {
    let stopped = false;
    const fetchOnce = () =>
      load()
        .then((answer) => !stopped && setValue(answer))
        .catch((error: unknown) => console.warn(`${what} not loaded`, error));
    void fetchOnce();
    const timer = setInterval(fetchOnce, everyMs);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
    // `deps`: what `load` depends on, as the caller names it
  }, deps);
  return value;
}
