export { type ApiStack, startApiStack } from './api-stack';
export { call } from './http';
