export * from './capacity';
export * from './forecast';
export * from './placement';
export * from './round';
export * from './warm';
