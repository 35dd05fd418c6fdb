export { Broker } from './broker';
export { BlockingConnection, type ReadConnection } from './connection';
export type { MachineLogLine, WorkerStateInput } from './fleet';
export type { EventGroupLoss, EventStreamInfo, QueueHistoryWrite, UnreadableQueueSample } from './streams';
export type { SubmitOptions } from './jobs';
export type { PlannerRound } from './planner';
export { EventTail } from './tail';
export * from './types';
export type { TracedJob } from './replies';
