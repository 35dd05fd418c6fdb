import { z } from 'zod';

/**
 * Everything a run is made of besides the seed, the hours and the policy: the
 * fleet and the workload. Every field has a default taken from docs/simulator.md
 * (the published figures, and our own fleet's 10 -> 50 -> 10 day); a config
 * file overrides any of them.
 */
export const MachineType = z
  .object({
    gpu: z.string().min(1),
    gpu_memory_gb: z.number().positive(),
    disk_gb: z.number().positive(),
    download_mb_s: z.number().positive(),
    /** share of the fleet's machines of this type */
    weight: z.number().positive(),
  })
  .strict();

export const FleetConfig = z
  .object({
    /** machines at the quietest hour and at the busiest (the size follows the same daily curve as arrivals) */
    min_machines: z.number().int().min(1).default(10),
    max_machines: z.number().int().min(1).default(50),
    types: z
      .array(MachineType)
      .min(1)
      .default([
        { gpu: 'rtx-4090', gpu_memory_gb: 24, disk_gb: 100, download_mb_s: 100, weight: 0.7 },
        { gpu: 'a100-80gb', gpu_memory_gb: 80, disk_gb: 250, download_mb_s: 250, weight: 0.3 },
      ]),
    /** seconds from asking the provider for a machine to its worker registering */
    boot_s: z.object({ min: z.number().nonnegative(), max: z.number().nonnegative() }).strict().default({ min: 60, max: 180 }),
    /** spot interruptions per machine per hour */
    preemptions_per_hour: z.number().nonnegative().default(0.05),
    /** share of interruptions the provider announces (then `notice_s` ahead) */
    notice_share: z.number().min(0).max(1).default(0.5),
    notice_s: z.number().nonnegative().default(30),
    /** how often the autoscaler compares the fleet with its target */
    scale_every_s: z.number().positive().default(300),
  })
  .strict();

export const WorkloadConfig = z
  .object({
    /**
     * mean arrivals per hour at the daily peak, bursts aside (the trough is `trough_share` of it): the rate
     * at which the baseline keeps the 50-machine peak ~80% occupied, ~30,200 jobs a day (docs/simulator.md, "The default arrival rate")
     */
    peak_jobs_per_hour: z.number().positive().default(1_750),
    trough_share: z.number().positive().max(1).default(0.1),
    /** hour of the day (0-24) of the trough; the peak is 12 hours later */
    trough_hour: z.number().min(0).max(24).default(4),
    /** share of each job class among arrivals */
    mix: z.object({ image: z.number().nonnegative(), text: z.number().nonnegative(), video: z.number().nonnegative() }).strict().default({ image: 0.7, text: 0.25, video: 0.05 }),
    /** bursts: how often one starts (per hour), how long it lasts, and how much it multiplies the rate */
    bursts_per_hour: z.number().nonnegative().default(2),
    burst_minutes: z.number().positive().default(5),
    burst_factor: z.number().min(1).default(3),
    tenants: z.number().int().min(1).default(20),
  })
  .strict();

export const SimulationConfig = z
  .object({
    fleet: FleetConfig.default(FleetConfig.parse({})),
    workload: WorkloadConfig.default(WorkloadConfig.parse({})),
    /** how often a worker renews its leases and says it is alive (the real worker's default: a third of the lease) */
    heartbeat_s: z.number().positive().default(10),
    /** the broker's affinity bound (affinityWaitMs) in the policies with model affinity: how long a job may be left for a worker holding its model (the broker's default, 0: none; docs/simulator.md measures 10 and 30 s) */
    affinity_wait_s: z.number().min(0).max(600).default(0),
  })
  .strict();
export type SimulationConfig = z.output<typeof SimulationConfig>;
export type MachineType = z.output<typeof MachineType>;
