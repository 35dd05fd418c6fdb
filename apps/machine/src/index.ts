export * from './hardware';
export * from './config';
export * from './models';
export * from './custom-nodes';
