export * from './config';
export * from './delivery';
export { messageId } from './event-intake';
export * from './service';
