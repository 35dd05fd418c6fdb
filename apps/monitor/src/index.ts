export { DIST_DIR, MONITOR_ROOT, WEB_DIR, ensureMonitorBundle, sourcesStamp, viteConfig } from './bundle';
export { DEFAULT_MONITOR_PORT, type MonitorServer, type MonitorServerOptions, originsOf, startMonitorServer } from './server';
