export {
  type AbortCause,
  type Connector,
  JobAbortError,
  type JobContext,
  JobFailure,
  type JobProgressInput,
  ModelLoadError,
} from './connector';
export { type DropReason, type FailOutcome, Worker, type WorkerEvents, type WorkerOptions } from './worker';
export { SimulationPayload, simulationConnector } from './connectors/simulation';
export { ComfyUIConnectorOptions, classifyExecutionError, classifyRejection, comfyuiConnector } from './connectors/comfyui';
export { ComfyPayload, promptIdFor } from './connectors/comfyui-protocol';
export { type RefusedNode, enforceNodePolicy, refusedNodes } from './connectors/comfyui-node-policy';
export { type AssetInput, type AssetStore, AssetStoreRefusedError, AssetUploadError, type StoredAsset, assetKey } from './assets/asset-store';
export { LocalDirectoryStoreOptions, localDirectoryStore } from './assets/local-directory-store';
export { ServiceClient, ServiceEndpoint, statusFailure } from './service-client';
export { ComfyUIRemoteConnectorOptions, comfyuiRemoteConnector } from './connectors/comfyui-remote';
export { OpenAIPayload, openaiConnector } from './connectors/openai';
export { OllamaPayload, ollamaConnector } from './connectors/ollama';
export { httpConnector, pointer } from './connectors/http';
export { AzureBlobStoreOptions, azureBlobStore } from './assets/azure-blob-store';
export { S3StoreOptions, type S3StoreRefusal, S3StoreRefusedError, s3ObjectUrl, s3Store } from './assets/s3-store';
export { type StopOnSignalsOptions, stopOnSignals } from './shutdown';
export { HttpLogShipper, HttpLogShipperOptions } from './logging/http-log-shipper';
export { downloadProgress, ensureJobModels } from './job-models';
export { type RunningWorkerProcess, type WorkerProcessOptions, runWorkerProcess } from './worker-process';
