import { Broker, type ClaimedJob } from '@emp/core';
import { Worker, type Connector } from '@emp/worker';
import { Redis } from 'ioredis';
import { pino } from 'pino';
const redis = new Redis(process.argv[2]!);
const broker = await Broker.connect({ redis, config: { eventsMaxLen: 10_000 } });
const jobs = Number(process.argv[3] ?? 5000);
for (let i = 0; i < jobs; i += 500) await broker.submitMany(Array.from({ length: 500 }, () => ({ service: "simulation", payload: { noop: true } })));
if (process.env.ZZ_PAUSE) { console.log("submitted"); await new Promise((r) => setTimeout(r, Number(process.env.ZZ_PAUSE))); }
const connector: Connector = { service: 'simulation', startsItself: true, async run(_job: ClaimedJob) { return null; } };
const w = new Worker({ broker, id: 'd', pool: 'standard', capabilities: { services: ['simulation'] }, connectors: [connector], concurrency: Number(process.argv[4] ?? 1), logger: pino({ level: 'warn' }) });
let done = 0;
const t0 = performance.now(); const c0 = process.cpuUsage();
await new Promise<void>((resolve) => { w.on('job:completed', () => { if (++done === jobs) resolve(); }); void w.start(); });
const cpu = process.cpuUsage(c0);
console.log(`drain ${jobs} c=${process.argv[4] ?? 1}: ${(jobs / ((performance.now() - t0) / 1000)).toFixed(0)} jobs/s, client CPU ${((cpu.user + cpu.system) / jobs).toFixed(1)} us/job`);
await w.stop({ graceMs: 100 }); await redis.quit();
