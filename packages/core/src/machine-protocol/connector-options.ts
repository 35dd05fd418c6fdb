/**
 * What a machine's config says about each connector its workers run, and so
 * what a worker process is started with: the options of every connector type,
 * validated by the machine agent before it starts a worker and by the worker
 * when it builds the connector. The connectors themselves live in the worker.
 */
import { z } from 'zod';
import { FailureKind } from '../job';
import { ServiceName } from '../requirements';

/** TLS trust for a service with a private CA or a self-signed certificate; verification is never switched off. */
export const ServiceTls = z
  .object({
    /** PEM of the CA (or self-signed certificate) to trust, in addition to the system's */
    ca: z.string().min(1).optional(),
    /** PEM client certificate and key, for services that require mutual TLS */
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
  })
  .strict()
  .refine((tls) => (tls.cert === undefined) === (tls.key === undefined), { message: 'cert and key go together' });
export type ServiceTls = z.input<typeof ServiceTls>;

/** A node class name, or a pattern where `*` stands for any run of characters (`LoadImageFrom*`, `*URL*`). */
const ClassTypePattern = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^\s]+$/, 'a class_type pattern has no spaces');

/**
 * Which node types (`class_type`) a machine's ComfyUI may be asked to run.
 * Custom nodes can do anything on the machine (load an image or a model from a
 * URL a client chooses, say); this keeps such nodes away from a machine whose
 * operator did not mean to offer them. Matching ignores case. A node on the
 * deny list is refused; with an allow list, so is every node not on it.
 */
export const ComfyNodePolicy = z
  .object({
    /** only these node types may run; absent: any that is not denied */
    allow: z.array(ClassTypePattern).max(2_000).optional(),
    /** these node types never run (checked before `allow`) */
    deny: z.array(ClassTypePattern).max(2_000).default([]),
  })
  .strict();
export type ComfyNodePolicy = z.output<typeof ComfyNodePolicy>;
export type ComfyNodePolicyInput = z.input<typeof ComfyNodePolicy>;

// ---------------------------------------------------------------- simulation

const SimulatedMilliseconds = z.number().finite().min(0).max(86_400_000);

/** A fixed duration, a uniform range, or a normal distribution (cut at 0). */
const Duration = z.union([
  SimulatedMilliseconds,
  z
    .object({ min: SimulatedMilliseconds, max: SimulatedMilliseconds })
    .strict()
    .refine((d) => d.min <= d.max, { message: 'min must not exceed max' }),
  z.object({ mean: SimulatedMilliseconds, stddev: SimulatedMilliseconds.optional() }).strict(),
], { error: 'expected milliseconds, { min, max } or { mean, stddev? }' });

const WeightedFailureKind = z.union([FailureKind, z.object({ kind: FailureKind, weight: z.number().positive() }).strict()]);

export const SimulationOptions = z
  .object({
    /** how long a job runs (ms); a normal distribution without stddev uses a quarter of its mean */
    durationMs: Duration.default(1_000),
    /** progress updates per job */
    steps: z.number().int().min(0).max(10_000).default(10),
    /** share of jobs that fail (halfway through) */
    failureRate: z.number().min(0).max(1).default(0),
    /** what the failing jobs fail with: kinds, or kinds with weights */
    failureKinds: z.array(WeightedFailureKind).min(1).default(['retryable']),
    /** makes durations and failures reproducible */
    seed: z.number().int().optional(),
    /** how long loading a model takes when asked to without a job (a `load` command: the planner's warm load), in ms */
    loadMs: z.number().int().min(0).max(600_000).default(0),
    /** the service it pretends to be */
    service: ServiceName.default('simulation'),
  })
  .strict();
export type SimulationOptions = z.input<typeof SimulationOptions>;

// ---------------------------------------------------------------- ComfyUI

/** Inputs that name a model file: a `value_not_in_list` on one means "this worker lacks the model", not "bad workflow". */
export const MODEL_INPUTS = [
  'ckpt_name', 'unet_name', 'vae_name', 'lora_name', 'clip_name', 'clip_name1', 'clip_name2', 'clip_name3',
  'control_net_name', 'model_name', 'style_model_name', 'gligen_name', 'upscale_model_name', 'hypernetwork_name',
  'embedding_name', 'ipadapter_file', 'clip_vision_name',
];

const Milliseconds = z.number().int().positive().max(3_600_000);

/**
 * A ComfyUI connector's options as a machine's config states them; the worker
 * adds the asset store its output files go to (one per process, never inline).
 */
export const ComfyUIOptions = z
  .object({
    /** the service name jobs ask for */
    service: ServiceName.default('comfyui'),
    /** where ComfyUI listens */
    baseUrl: z.string().url().default('http://127.0.0.1:8188'),
    /** sent with every request and the WebSocket upgrade (auth for a ComfyUI behind a proxy) */
    headers: z.record(z.string(), z.string()).default({}),
    tls: ServiceTls.optional(),
    /** which output `type`s are results (`temp` holds previews) */
    outputTypes: z.array(z.string()).min(1).default(['output']),
    modelInputs: z.array(z.string()).default(MODEL_INPUTS),
    /** which node types this worker submits (allow / deny lists of class_type); absent: all */
    nodePolicy: ComfyNodePolicy.optional(),
    requestTimeoutMs: Milliseconds.default(30_000),
    connectTimeoutMs: Milliseconds.default(10_000),
    /** how often /history is asked once the prompt is done, until its entry is written */
    historyPollMs: Milliseconds.default(100),
    /** how long a done prompt may go without a history entry */
    historyTimeoutMs: Milliseconds.default(30_000),
    /** while running, /history and /queue are checked this often, in case a message was lost */
    watchdogMs: Milliseconds.default(5_000),
    /** reconnects of a dropped WebSocket before the attempt fails (retryable) */
    reconnectAttempts: z.number().int().min(0).max(100).default(5),
    reconnectDelayMs: Milliseconds.default(500),
    /** the /interrupt sent on cancel gives up after this long */
    interruptTimeoutMs: Milliseconds.default(2_000),
  })
  .strict();
export type ComfyUIOptions = z.input<typeof ComfyUIOptions>;

/**
 * A ComfyUI on someone else's infrastructure (a customer's server, a hosted
 * endpoint): the same protocol, but its URL is required, it usually sits
 * behind auth (`headers`) and TLS with a private CA (`tls.ca`: trusted in
 * addition to the system's, for this connector only; verification is never
 * switched off). Its own service name keeps such jobs apart from those of the
 * worker's local ComfyUI.
 */
export const ComfyUIRemoteOptions = ComfyUIOptions.extend({
  service: ServiceName.default('comfyui-remote'),
  baseUrl: z.string().url(),
  /** a shared server is farther away: more patience per request and a slower watchdog by default */
  requestTimeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
  watchdogMs: z.number().int().positive().max(3_600_000).default(10_000),
}).strict();
export type ComfyUIRemoteOptions = z.input<typeof ComfyUIRemoteOptions>;

// ---------------------------------------------------------------- LLM servers

export const OllamaOptions = z
  .object({
    service: ServiceName.default('ollama'),
    baseUrl: z.string().url().default('http://127.0.0.1:11434'),
    headers: z.record(z.string(), z.string()).default({}),
    tls: ServiceTls.optional(),
    /** pull a model that is not on disk (false: fail the attempt as infrastructure, for a worker that has it) */
    pull: z.boolean().default(true),
    requestTimeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
    /** longest silence in a stream; a model load or a pull can pause for a while */
    idleTimeoutMs: z.number().int().positive().max(3_600_000).default(300_000),
  })
  .strict();
export type OllamaOptions = z.input<typeof OllamaOptions>;

export const OpenAIOptions = z
  .object({
    service: ServiceName.default('openai'),
    /** the API root, up to and including `/v1` (vLLM, llama.cpp, LM Studio, OpenAI itself) */
    baseUrl: z.string().url().default('http://127.0.0.1:8000/v1'),
    /** sent as `Authorization: Bearer <apiKey>` */
    apiKey: z.string().min(1).optional(),
    headers: z.record(z.string(), z.string()).default({}),
    tls: ServiceTls.optional(),
    /** used when the payload names no model */
    model: z.string().min(1).optional(),
    /** longest wait for the response to start */
    requestTimeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
    /** longest silence between two chunks of the stream */
    idleTimeoutMs: z.number().int().positive().max(3_600_000).default(60_000),
  })
  .strict();
export type OpenAIOptions = z.input<typeof OpenAIOptions>;

// ---------------------------------------------------------------- a generic REST service

/** RFC 6901: '' is the whole document, '/a/0/b' walks keys and indexes, `~1` is '/', `~0` is '~'. */
const JsonPointer = z.string().regex(/^(\/.*)?$/, { message: "a JSON pointer is '' or starts with '/'" });

const Statuses = z.array(z.string().min(1)).min(1);

export const HttpServiceOptions = z
  .object({
    service: ServiceName.default('http'),
    baseUrl: z.string().url(),
    headers: z.record(z.string(), z.string()).default({}),
    tls: ServiceTls.optional(),
    requestTimeoutMs: z.number().int().positive().max(3_600_000).default(30_000),
    /** where the job is submitted; the payload is the body, or `{[wrapPayloadIn]: payload}` */
    submitPath: z.string().default('run'),
    submitMethod: z.enum(['POST', 'PUT']).default('POST'),
    wrapPayloadIn: z.string().min(1).optional(),
    /** the remote job's id in the submit reply */
    idPointer: JsonPointer.default('/id'),
    /** polled until the status is terminal; `{id}` is replaced by the remote id */
    statusPath: z.string().default('status/{id}'),
    /** POSTed when the job is canceled (optional) */
    cancelPath: z.string().optional(),
    statusPointer: JsonPointer.default('/status'),
    /** status strings per outcome (compared case-insensitively); any other status means "not done yet" */
    statusMap: z
      .object({ succeeded: Statuses, failed: Statuses, canceled: Statuses.default(['CANCELLED', 'CANCELED']) })
      .strict()
      .default({ succeeded: ['COMPLETED', 'SUCCEEDED', 'SUCCESS'], failed: ['FAILED', 'ERROR', 'TIMED_OUT'], canceled: ['CANCELLED', 'CANCELED'] }),
    resultPointer: JsonPointer.default('/output'),
    errorPointer: JsonPointer.default('/error'),
    /** a number in the status reply that says how far the job is, out of `progressMax` */
    progressPointer: JsonPointer.optional(),
    progressMax: z.number().positive().default(1),
    /** what a remote `failed` counts as: the service's failures are often transient */
    failureKind: FailureKind.default('retryable'),
    pollIntervalMs: z.number().int().positive().max(600_000).default(1_000),
    /** polls back off (x1.5) while the status does not change, up to this */
    maxPollIntervalMs: z.number().int().positive().max(600_000).default(5_000),
    /** polling gives up (retryable) after this long */
    maxDurationMs: z.number().int().positive().max(7 * 86_400_000).default(3_600_000),
  })
  .strict();
export type HttpServiceOptions = z.input<typeof HttpServiceOptions>;
