export { Broker } from './broker';
export { BlockingConnection, type ReadConnection } from './connection';
export type { MachineLogLine, WorkerStateInput } from './fleet';
export type { EventGroupLoss, EventStreamInfo, QueueHistoryWrite, UnreadableQueueSample } from './streams';
export type { SubmitOptions } from './jobs';
export { DEMAND_BUCKET_MS, DEMAND_RETENTION_MS, type DemandBucket, type UnreadableDemandCount } from './demand';
export { EventTail } from './tail';
export * from './types';
export type { TracedJob } from './replies';
