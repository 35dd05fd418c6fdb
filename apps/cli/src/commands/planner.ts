import { PlannerReport } from '@emp/core';
import type { Command } from 'commander';
import { type ApiFlags, callApi } from '../api-call';
import { json } from '../format';
import { plannerText } from '../planner-view';

/** `emp planner`: what the planner decided and why, through the API's GET /v1/planner (docs/planner.md). */
export function registerPlanner(program: Command): void {
  program
    .command('planner')
    .description("the planner's view per pool: capacity hint, forecast per model, the model x machine placement matrix and the last decisions with their reasons")
    .option('--pool <pool>', 'one pool (default: every pool)')
    .option('--decisions <n>', 'how many of the last decisions to list', (value) => Number(value), 10)
    .option('--api <url>', 'the API (default: EMP_API_URL, else http://127.0.0.1:3331)', process.env.EMP_API_URL || 'http://127.0.0.1:3331')
    .option('--api-key <key>', 'an operator API key (default: EMP_API_KEY)', process.env.EMP_API_KEY)
    .option('--json', 'print JSON for scripts (the API answer)')
    .action(async (options: ApiFlags & { pool?: string; decisions: number; json?: boolean }) => {
      const report = await callApi(options, 'GET', `/v1/planner${options.pool ? `?pool=${encodeURIComponent(options.pool)}` : ''}`, PlannerReport);
      process.stdout.write(options.json ? `${json(report)}\n` : plannerText(report, { decisions: options.decisions }));
    });
}
