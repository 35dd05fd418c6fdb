import type { Command } from 'commander';

/**
 * One `emp` command as `emp --help` lists it, and where its implementation is.
 * `emp --help` is drawn from this table alone; a command's module (and with it
 * zod, ioredis, the broker...) is loaded only when that command runs, so that
 * every command starts with only what it needs. command-table.test.ts checks
 * that each entry says what its module registers.
 */
export interface CommandEntry {
  name: string;
  /** what follows the name in the listing: '[options]', '[options] <id>', or '' (a command with subcommands) */
  usage: string;
  description: string;
  /** the command's module: its register function adds the command with every option, argument, subcommand and action */
  load(): Promise<(program: Command) => void>;
}

export const COMMANDS: readonly CommandEntry[] = [
  {
    name: 'start',
    usage: '[options]',
    description:
      'run the local stack: Redis (embedded unless REDIS_URL or --redis), scheduler, API, webhook delivery, monitor, and a machine agent with workers and simulated services',
    load: async () => (await import('./commands/start')).registerStart,
  },
  {
    name: 'submit',
    usage: '[options]',
    description: 'submit a job and print its id; with --wait, follow it to the end',
    load: async () => (await import('./commands/submit')).registerSubmit,
  },
  {
    name: 'job',
    usage: '[options] <id>',
    description: 'show one job: state, timings, attempts, result or error',
    load: async () => (await import('./commands/job')).registerJob,
  },
  {
    name: 'jobs',
    usage: '[options]',
    description: 'recent jobs, newest first, by state, service, tenant, pool and submission time',
    load: async () => (await import('./commands/jobs')).registerJobs,
  },
  {
    name: 'cancel',
    usage: '[options] <id>',
    description: 'cancel a job (a running one is stopped by its worker); a finished job is left as it is',
    load: async () => (await import('./commands/cancel')).registerCancel,
  },
  {
    name: 'retry',
    usage: '[options] <id>',
    description: 'put a failed, canceled or expired job back in its queue, under the same id',
    load: async () => (await import('./commands/retry')).registerRetry,
  },
  {
    name: 'workflow',
    usage: '',
    description: 'multi-step workflows: submit a file of named steps, show, watch, cancel, list',
    load: async () => (await import('./commands/workflow')).registerWorkflow,
  },
  {
    name: 'queues',
    usage: '[options]',
    description: 'queue depth per pool and requirement class, with routability and the age of each head job',
    load: async () => (await import('./commands/queues')).registerQueues,
  },
  {
    name: 'pools',
    usage: '[options]',
    description: 'the pools jobs are routed to by expected duration: cutoffs, target wait, profile, queue, workers and learned durations',
    load: async () => (await import('./commands/pools')).registerPools,
  },
  {
    name: 'shards',
    usage: '[options]',
    description:
      "where each pool lives: each pool's shard counts, then every shard (a pool's, webhook delivery) with its cluster slot, node, queued and running jobs and workers, then each Redis node; `emp shards set` reshards a pool",
    load: async () => (await import('./commands/shards')).registerShards,
  },
  {
    name: 'workers',
    usage: '[options]',
    description: 'registered workers: state, machine, services, models held, last seen (offline ones stay listed)',
    load: async () => (await import('./commands/workers')).registerWorkers,
  },
  {
    name: 'top',
    usage: '[options]',
    description: 'a live one-screen view of pools, queues, workers, machines, throughput and recent failures, redrawn until q or Ctrl-C',
    load: async () => (await import('./commands/top')).registerTop,
  },
  {
    name: 'machines',
    usage: '[options]',
    description: 'registered machines: state, last status, last operator command (offline ones stay listed)',
    load: async () => (await import('./commands/machines')).registerMachines,
  },
  {
    name: 'planner',
    usage: '[options]',
    description: "the planner's view per pool: capacity hint, forecast per model, the model x machine placement matrix and the last decisions with their reasons",
    load: async () => (await import('./commands/planner')).registerPlanner,
  },
  {
    name: 'machine',
    usage: '[options]',
    description:
      "run this machine's agent: a worker (+ services) per GPU, supervised, registered, remote-controlled (see docs/machine.md); prefetch, evict or load a model on a machine",
    load: async () => (await import('./commands/machine')).registerMachine,
  },
  {
    name: 'watch',
    usage: '[options]',
    description: 'print events as they happen (jobs, workers, machines) until Ctrl-C',
    load: async () => (await import('./commands/watch')).registerWatch,
  },
  {
    name: 'simulate',
    usage: '[options]',
    description:
      'run the fleet simulator: simulated machines and workloads against the real broker on a private Redis, under a virtual clock (see docs/simulator.md)',
    load: async () => (await import('./commands/simulate')).registerSimulate,
  },
  {
    name: 'keys',
    usage: '',
    description: 'API keys: create (the key is shown once), list, revoke',
    load: async () => (await import('./commands/keys')).registerKeys,
  },
  {
    name: 'assets',
    usage: '',
    description: 'assets the workers stored: signed URLs to share them',
    load: async () => (await import('./commands/assets')).registerAssets,
  },
  {
    name: 'webhooks',
    usage: '',
    description: 'webhook endpoints (through the API), deliveries and signing secrets',
    load: async () => (await import('./commands/webhooks')).registerWebhooks,
  },
];

/**
 * The command a command line runs: its first word that is not an option (or
 * the value of `--redis`), or for `emp help <command>` the one asked about.
 */
export function requestedCommand(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--redis') i++;
    else if (!arg.startsWith('-')) return arg === 'help' ? args[i + 1] : arg;
  }
  return undefined;
}
