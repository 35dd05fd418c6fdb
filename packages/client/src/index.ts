export { type BatchResult, EmpClient, type EmpClientOptions, type JobPage, type SubmittedJob } from './client';
export { EmpApiError } from './errors';
export { type JobEvent, type WatchOptions } from './watch';
