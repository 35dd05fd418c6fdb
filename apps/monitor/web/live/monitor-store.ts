import { useSyncExternalStore } from 'react';
import { type MonitorAction, type MonitorState, initialState, monitorReducer } from '../state/monitor-state';

/**
 * The page's one copy of the monitor state, outside React so that the live
 * feed can read its cursors and apply a frame's worth of events in one go;
 * components read it with `useMonitorState` and re-render once per change.
 */
export class MonitorStore {
  private state: MonitorState = initialState;
  private readonly listeners = new Set<() => void>();

  getState = (): MonitorState => this.state;

  dispatch(action: MonitorAction): void {
    const next = monitorReducer(this.state, action);
    if (next === this.state) return;
    this.state = next;
    for (const listener of this.listeners) listener();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };
}

export function useMonitorState<T>(store: MonitorStore, select: (state: MonitorState) => T): T {
  return useSyncExternalStore(store.subscribe, () => select(store.getState()));
}
