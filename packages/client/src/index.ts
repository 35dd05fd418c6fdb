export { type BatchResult, EmpClient, type EmpClientOptions, type Identity, type JobPage, type MachineCommandAnswer, type SubmittedJob } from './client';
export { EmpApiError } from './errors';
export { type JobEvent, type WatchOptions } from './watch';
