import type { SimulationConfig } from './config';
import { Random, Z, drawLogNormal, logNormalFrom } from './random';

export const JOB_CLASSES = ['image', 'text', 'video'] as const;
export type JobClass = (typeof JOB_CLASSES)[number];

/** One job of a workload: when it arrives (ms after the start), what it needs and how long it runs once its model is loaded. */
export interface SimJob {
  arrivalMs: number;
  jobClass: JobClass;
  service: string;
  model: string;
  durationMs: number;
  tenant: string;
}

export interface Model {
  name: string;
  sizeGb: number;
}

/**
 * Figures from Alibaba's public GenAI serving trace for Stable Diffusion
 * (docs/simulator.md gives the source): execution time p50 23 s, p90 53 s
 * (p99 then comes out at 105 s against a published 106 s), capped at the
 * published maximum of ~570 s; model load p50 23 s, p99 52 s.
 */
export const IMAGE_EXECUTION = logNormalFrom(23, 53, Z.p90);
export const IMAGE_EXECUTION_MAX_S = 570;
export const MODEL_LOAD = logNormalFrom(23, 52, Z.p99);

/** 87 base models; the top 1 / 5 / 10 serve 31% / 70% / 87% of requests (the same trace). */
export const IMAGE_MODEL_COUNT = 87;
export const IMAGE_MODEL_SHARES = { top1: 0.31, top5: 0.7, top10: 0.87 } as const;

/**
 * The share of requests of each image model, most popular first: the published
 * top-1/5/10 shares exactly, each band's share spread over its models with a
 * gentle decay (the trace does not publish the ranks within a band).
 */
export function imageModelWeights(): number[] {
  const band = (share: number, count: number): number[] => {
    const raw = Array.from({ length: count }, (_, i) => 0.85 ** i);
    const sum = raw.reduce((a, b) => a + b, 0);
    return raw.map((w) => (share * w) / sum);
  };
  const { top1, top5, top10 } = IMAGE_MODEL_SHARES;
  return [top1, ...band(top5 - top1, 4), ...band(top10 - top5, 5), ...band(1 - top10, IMAGE_MODEL_COUNT - 10)];
}

/** The models every run knows: image checkpoints (2-7 GB: SD 1.5 to SDXL), a few LLMs and video models. */
export function modelCatalogue(random: Random): Map<string, Model> {
  const models = new Map<string, Model>();
  for (let i = 0; i < IMAGE_MODEL_COUNT; i++) {
    const name = `sd-${String(i + 1).padStart(2, '0')}`;
    models.set(name, { name, sizeGb: Math.round(random.uniform(2, 7) * 10) / 10 });
  }
  for (const [name, sizeGb] of [['llm-8b', 16], ['llm-3b', 6], ['video-14b', 28], ['video-5b', 11]] as const) models.set(name, { name, sizeGb });
  return models;
}

const TEXT_MODELS = ['llm-8b', 'llm-8b', 'llm-8b', 'llm-3b'];
const VIDEO_MODELS = ['video-14b', 'video-5b'];

/** The daily curve, 0..1: `trough` at the trough hour, 1 twelve hours later, a cosine between. */
export function dailyShape(atMs: number, troughHour: number): number {
  const hour = (atMs / 3_600_000) % 24;
  return (1 - Math.cos((2 * Math.PI * (hour - troughHour)) / 24)) / 2;
}

/**
 * The built-in workload: arrivals of a Poisson process whose rate follows the
 * day (peak ~10x trough) and jumps during random bursts, drawn by thinning;
 * image jobs as the Alibaba trace, text jobs 1-5 s, video jobs 5-10 min.
 */
export function generateWorkload(config: SimulationConfig['workload'], hours: number, seed: number): SimJob[] {
  const random = new Random(seed).fork('workload');
  const arrivals = random.fork('arrivals');
  const shapes = random.fork('jobs');
  const endMs = hours * 3_600_000;
  const peakPerMs = config.peak_jobs_per_hour / 3_600_000;
  const maxRate = peakPerMs * config.burst_factor;

  const bursts: Array<[number, number]> = [];
  if (config.bursts_per_hour > 0) {
    const burstRandom = random.fork('bursts');
    for (let at = burstRandom.exponential(3_600_000 / config.bursts_per_hour); at < endMs; at += burstRandom.exponential(3_600_000 / config.bursts_per_hour)) {
      bursts.push([at, at + config.burst_minutes * 60_000]);
    }
  }
  const inBurst = (at: number) => bursts.some(([from, to]) => at >= from && at < to);
  const rate = (at: number) =>
    peakPerMs * (config.trough_share + (1 - config.trough_share) * dailyShape(at, config.trough_hour)) * (inBurst(at) ? config.burst_factor : 1);

  const imageWeights = cumulative(imageModelWeights());
  const mixWeights = cumulative(JOB_CLASSES.map((c) => config.mix[c]));
  const jobs: SimJob[] = [];
  for (let at = arrivals.exponential(1 / maxRate); at < endMs; at += arrivals.exponential(1 / maxRate)) {
    if (arrivals.next() * maxRate > rate(at)) continue;
    const jobClass = JOB_CLASSES[shapes.pick(mixWeights)]!;
    const tenant = `tenant-${1 + Math.floor(shapes.next() * config.tenants)}`;
    const arrivalMs = Math.round(at);
    if (jobClass === 'image') {
      const model = `sd-${String(1 + shapes.pick(imageWeights)).padStart(2, '0')}`;
      const durationMs = Math.round(drawLogNormal(shapes, IMAGE_EXECUTION, IMAGE_EXECUTION_MAX_S) * 1000);
      jobs.push({ arrivalMs, jobClass, service: 'comfyui', model, durationMs, tenant });
    } else if (jobClass === 'text') {
      const model = TEXT_MODELS[Math.floor(shapes.next() * TEXT_MODELS.length)]!;
      jobs.push({ arrivalMs, jobClass, service: 'ollama', model, durationMs: Math.round(shapes.uniform(1, 5) * 1000), tenant });
    } else {
      const model = VIDEO_MODELS[Math.floor(shapes.next() * VIDEO_MODELS.length)]!;
      jobs.push({ arrivalMs, jobClass, service: 'comfyui', model, durationMs: Math.round(shapes.uniform(5, 10) * 60_000), tenant });
    }
  }
  return jobs;
}

function cumulative(weights: readonly number[]): number[] {
  let sum = 0;
  return weights.map((w) => (sum += w));
}
