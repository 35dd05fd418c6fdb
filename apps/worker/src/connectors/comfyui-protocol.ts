/**
 * ComfyUI's wire format, as zod schemas: the HTTP replies (/prompt, /history,
 * /queue) and the WebSocket messages (`{type, data}` text frames), checked
 * against Comfy-Org/ComfyUI server.py, execution.py, main.py and
 * comfy_execution/progress.py. Schemas are loose (extra fields pass) since
 * newer builds add fields; a field we rely on with the wrong type is a
 * protocol error.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

/** Node ids are strings in JSON; some custom nodes send numbers. */
const NodeId = z.union([z.string(), z.number()]).transform(String);

export const ComfyNode = z
  .object({
    class_type: z.string().min(1).max(200),
    inputs: z.record(z.string(), z.unknown()).default({}),
  })
  .loose();

/** A job's payload: the API-format workflow and anything ComfyUI takes alongside it. */
export const ComfyPayload = z
  .object({
    workflow: z.record(z.string().min(1).max(64), ComfyNode).refine((w) => Object.keys(w).length > 0, { message: 'the workflow has no nodes' }),
    extra_data: z.record(z.string(), z.unknown()).optional(),
  })
  .loose();
export type ComfyPayload = z.output<typeof ComfyPayload>;

// ------------------------------------------------------------------ HTTP replies

export const PromptAccepted = z.object({ prompt_id: z.string().min(1), number: z.number().optional() }).loose();

const ValidationReason = z
  .object({
    type: z.string(),
    message: z.string().default(''),
    details: z.unknown().optional(),
    extra_info: z.record(z.string(), z.unknown()).nullish(),
  })
  .loose();
export type ValidationReason = z.output<typeof ValidationReason>;

/**
 * The 400 of POST /prompt: `{error: {type, message, details, extra_info}, node_errors: {id: {errors, class_type}}}`.
 * Older builds answer a prompt-level error (unknown node class, no outputs) with `node_errors: []`.
 */
export const PromptRejected = z
  .object({
    error: z.union([ValidationReason, z.string()]),
    node_errors: z.preprocess(
      (value) => (Array.isArray(value) && value.length === 0 ? {} : value),
      z
        .record(
          z.string(),
          z.object({ errors: z.array(ValidationReason).default([]), class_type: z.string().optional() }).loose(),
        )
        .default({}),
    ),
  })
  .loose();
export type PromptRejected = z.output<typeof PromptRejected>;

const FileRef = z
  .object({ filename: z.string().min(1), subfolder: z.string().default(''), type: z.string().default('output') })
  .loose();
export type FileRef = z.output<typeof FileRef>;

export const HistoryEntry = z
  .object({
    outputs: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
    status: z
      .object({
        status_str: z.string().optional(),
        completed: z.boolean().optional(),
        messages: z.array(z.tuple([z.string(), z.unknown()])).default([]),
      })
      .loose()
      .nullish(),
  })
  .loose();
export type HistoryEntry = z.output<typeof HistoryEntry>;

/** GET /history/{id}: `{}` until the prompt is done, then `{id: entry}`. */
export const HistoryReply = z.record(z.string(), HistoryEntry);

/** GET /queue: rows are `[number, prompt_id, prompt, extra_data, outputs]`. */
const QueueRow = z.array(z.unknown()).min(2);
export const QueueReply = z.object({ queue_running: z.array(QueueRow).default([]), queue_pending: z.array(QueueRow).default([]) }).loose();

// ------------------------------------------------------------------ WebSocket messages

export const Envelope = z.object({ type: z.string(), data: z.unknown() }).loose();

export const ExecutionError = z
  .object({
    prompt_id: z.string().optional(),
    node_id: NodeId.optional(),
    node_type: z.string().optional(),
    exception_message: z.string().default(''),
    exception_type: z.string().default(''),
    traceback: z.array(z.string()).optional(),
  })
  .loose();
export type ExecutionError = z.output<typeof ExecutionError>;

/** The message types the connector acts on; any other type (custom nodes add their own) is ignored. */
export const MESSAGE_SCHEMAS = {
  status: z.object({ status: z.unknown().optional(), sid: z.string().optional() }).loose(),
  execution_start: z.object({ prompt_id: z.string() }).loose(),
  execution_cached: z.object({ nodes: z.array(NodeId), prompt_id: z.string().optional() }).loose(),
  executing: z.object({ node: NodeId.nullable(), prompt_id: z.string().optional() }).loose(),
  progress: z.object({ value: z.number(), max: z.number(), prompt_id: z.string().optional(), node: NodeId.nullish() }).loose(),
  progress_state: z
    .object({
      prompt_id: z.string(),
      nodes: z.record(z.string(), z.object({ value: z.number(), max: z.number(), state: z.string() }).loose()),
    })
    .loose(),
  executed: z.object({ node: NodeId, output: z.record(z.string(), z.unknown()).nullish(), prompt_id: z.string().optional() }).loose(),
  execution_success: z.object({ prompt_id: z.string() }).loose(),
  execution_error: ExecutionError,
  execution_interrupted: z.object({ prompt_id: z.string().optional(), node_id: NodeId.optional(), node_type: z.string().optional() }).loose(),
} as const;

export type ComfyMessage = {
  [K in keyof typeof MESSAGE_SCHEMAS]: { type: K; data: z.output<(typeof MESSAGE_SCHEMAS)[K]> };
}[keyof typeof MESSAGE_SCHEMAS];

/** Binary frames start with a 4-byte big-endian event type (protocol.BinaryEventTypes). */
export const BINARY_EVENTS: Record<number, string> = {
  1: 'preview_image',
  2: 'unencoded_preview_image',
  3: 'text',
  4: 'preview_image_with_metadata',
};

/**
 * The prompt id this attempt asks ComfyUI to use: a lowercase canonical UUID
 * (the form newer builds accept) derived from job id and attempt, so the same
 * attempt always maps to the same run and a restarted connector can find it.
 */
export function promptIdFor(jobId: string, attempt: number): string {
  const hash = createHash('sha256').update(`emp:${jobId}:${attempt}`).digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50; // version 5 layout (name-based, SHA)
  hash[8] = (hash[8]! & 0x3f) | 0x80; // RFC 4122 variant
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** The files of one node's output: every list of `{filename, subfolder, type}` (images, gifs, videos, audio, ...). */
export function fileRefsOf(output: Record<string, unknown>): Array<{ kind: string; ref: FileRef }> {
  const refs: Array<{ kind: string; ref: FileRef }> = [];
  for (const [kind, value] of Object.entries(output)) {
    if (!Array.isArray(value)) continue;
    for (const item of value) {
      const parsed = FileRef.safeParse(item);
      if (parsed.success) refs.push({ kind, ref: parsed.data });
    }
  }
  return refs;
}
