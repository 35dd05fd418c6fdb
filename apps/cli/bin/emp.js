#!/usr/bin/env node
// Runs the TypeScript CLI in this process through tsx, so signals and exit codes pass straight through.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
