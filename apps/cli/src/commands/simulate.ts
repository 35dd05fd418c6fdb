import { readFile, writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import { UsageError } from '../errors';
import { intFlag, parseFlags } from '../flags';
import { json } from '../format';

const SimulateFlags = z.object({
  policy: z.string().min(1).default('baseline'),
  seed: intFlag(z.number().int().min(0).max(4_294_967_295)).default(1),
  hours: z
    .string()
    .transform((text, ctx) => {
      const hours = Number(text);
      if (text.trim() === '' || !Number.isFinite(hours) || hours <= 0 || hours > 24 * 7) {
        ctx.addIssue({ code: 'custom', message: `expected a number of hours above 0 and at most 168, got '${text}'` });
        return z.NEVER;
      }
      return hours;
    })
    .default(1),
  machines: intFlag(z.number().int().min(1).max(10_000)).optional(),
  trace: z.string().min(1).optional(),
  config: z.string().min(1).optional(),
  json: z.boolean().default(false),
  plot: z.string().min(1).optional(),
  fit: z.boolean().default(false),
});

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description('run the fleet simulator: simulated machines and workloads against the real broker on a private Redis, under a virtual clock (see docs/simulator.md)')
    .option('--policy <name>', 'a policy, or all (default baseline; the others arrive with issue 13)')
    .option('--seed <n>', 'the seed: the same seed gives the same table (default 1)')
    .option('--hours <h>', 'simulated hours from midnight (default 1)')
    .option('--machines <m>', 'a fixed fleet size instead of the daily 10 -> 50 -> 10 curve')
    .option('--trace <file.csv>', 'replay a trace: arrival_s,service,model,duration_s,tenant[,class]')
    .option('--config <file.json>', 'fleet and workload settings over the defaults (docs/simulator.md)')
    .option('--json', 'print JSON for scripts')
    .option('--plot <out.svg>', 'draw wait p95 and machines up per hour, one line per policy, as SVG')
    .option('--fit', "find each policy's smallest fleet (0.25-3x the fleet curve) that meets the wait targets, in machine-hours")
    .action(async (options: Record<string, unknown>) => {
      const flags = parseFlags(SimulateFlags, options);
      const simulator = await import('@emp/simulator');
      let config: unknown;
      if (flags.config) {
        try {
          config = JSON.parse(await readFile(flags.config, 'utf8'));
        } catch (error) {
          throw new UsageError(`--config ${flags.config}: ${(error as Error).message}`);
        }
        const parsed = simulator.SimulationConfig.safeParse(config);
        if (!parsed.success) throw new UsageError(`--config ${flags.config}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      }
      if (flags.policy !== 'all' && !simulator.POLICIES.some((p) => p.name === flags.policy)) {
        throw new UsageError(`invalid --policy: no policy "${flags.policy}"; the policies are ${simulator.POLICIES.map((p) => p.name).join(', ')} or all (${simulator.PLANNED_POLICIES})`);
      }
      let result;
      try {
        result = await simulator.simulate({
          policy: flags.policy,
          seed: flags.seed,
          hours: flags.hours,
          machines: flags.machines,
          trace: flags.trace,
          config,
          fit: flags.fit,
        });
      } catch (error) {
        if (error instanceof simulator.TraceError || (error as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`--trace: ${(error as Error).message}`);
        throw error;
      }
      if (flags.plot !== undefined) {
        const svg = await simulator.plotSvg({ policies: result.policies, seed: flags.seed, hours: flags.hours });
        try {
          await writeFile(flags.plot, svg);
        } catch (error) {
          throw new UsageError(`--plot ${flags.plot}: ${(error as Error).message}`);
        }
      }
      process.stdout.write(flags.json ? `${json(result)}\n` : `${simulator.formatSimulation(result)}\n`);
    });
}
