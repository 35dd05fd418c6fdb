/** Why a machine agent stopped: a `shutdown` command, or a stop() from outside (SIGTERM, Ctrl-C, a test). */
export type StopReason = 'shutdown command' | 'SIGTERM' | 'SIGINT' | 'stopped';
