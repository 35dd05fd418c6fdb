export {
  type AbortCause,
  type Connector,
  JobAbortError,
  type JobContext,
  JobFailure,
  type JobProgressInput,
} from './connector';
export { type DropReason, type FailOutcome, Worker, type WorkerEvents, type WorkerOptions } from './worker';
export { SimulationOptions, SimulationPayload, simulationConnector } from './connectors/simulation';
