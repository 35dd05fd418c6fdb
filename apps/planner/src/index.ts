export * from './config';
export { evictionBlocker, fleetMachine } from './fleet';
export * from './planner';
