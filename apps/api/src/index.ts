export { ApiKeyStore, type ApiKeyRecord } from '@emp/core';
export { ACCESS, NewApiKey, ROLES, Role, type Principal } from './auth/roles';
export { HTTP_STATUS, type ApiErrorCode } from './errors';
export { EventHub } from './live/event-hub';
export { type ApiServer, type ApiServerOptions, DEFAULT_API_PORT, type ListeningApiServer, buildApiServer, startApiServer } from './server';
export type { QueueReport } from '@emp/core';
