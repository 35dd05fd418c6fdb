export * from './hardware';
export * from './config';
