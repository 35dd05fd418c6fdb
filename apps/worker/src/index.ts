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
export { ComfyUIOptions, MODEL_INPUTS, classifyExecutionError, classifyRejection, comfyuiConnector } from './connectors/comfyui';
export { ComfyPayload, promptIdFor } from './connectors/comfyui-protocol';
export { ComfyNodePolicy, type RefusedNode, enforceNodePolicy, refusedNodes } from './connectors/comfyui-node-policy';
export { type AssetInput, type AssetStore, AssetStoreRefusedError, AssetUploadError, type StoredAsset, assetKey } from './assets/asset-store';
export { LocalDirectoryStoreOptions, localDirectoryStore } from './assets/local-directory-store';
export { ServiceClient, ServiceEndpoint, ServiceTls, statusFailure } from './service-client';
export { ComfyUIRemoteOptions, comfyuiRemoteConnector } from './connectors/comfyui-remote';
export { OpenAIOptions, OpenAIPayload, openaiConnector } from './connectors/openai';
export { OllamaOptions, OllamaPayload, ollamaConnector } from './connectors/ollama';
export { HttpServiceOptions, httpConnector, pointer } from './connectors/http';
export { AzureBlobStoreOptions, azureBlobStore } from './assets/azure-blob-store';
export { S3StoreOptions, type S3StoreRefusal, S3StoreRefusedError, s3ObjectUrl, s3Store } from './assets/s3-store';
export { type StopOnSignalsOptions, stopOnSignals } from './shutdown';
export { HttpLogShipper, HttpLogShipperOptions } from './logging/http-log-shipper';
export {
  EnsureLine,
  EnsureRequest,
  MODEL_ERROR_CODES,
  ModelError,
  type ModelErrorCode,
  ModelProgress,
  type ModelProvider,
  type ReleaseModels,
  ReleaseRequest,
  downloadProgress,
  ensureJobModels,
  httpModelProvider,
} from './model-provider';
export {
  AssetStoreSpec,
  CONNECTOR_TYPES,
  ConnectorSpec,
  type ConnectorType,
  WORKER_CONFIG_ENV,
  WORKER_MAIN,
  WorkerProcessConfig,
  type WorkerProcessConfigInput,
  SupervisorMessage,
  WorkerProcessMessage,
  workerConfigFromEnv,
} from './process-config';
export { type RunningWorkerProcess, type WorkerProcessOptions, runWorkerProcess } from './worker-process';
