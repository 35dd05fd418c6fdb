/**
 * A record without its `undefined` values: a key whose value is `undefined`
 * is left out, one with `null`, `''`, `0` or `false` kept. For where a key's
 * presence matters rather than its value: fields written to a Redis hash,
 * records walked with `Object.entries`/`Object.keys` or printed key by key,
 * and spreads over defaults (`{ ...defaults, ...definedOnly(overrides) }`).
 * Where the receiver reads `undefined` as absent (JSON, zod `.optional()`,
 * options read with `??`), write the plain property instead.
 */
export function definedOnly<T extends object>(record: T): DefinedOnly<T> {
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== undefined)) as DefinedOnly<T>;
}

/** T with every key that may hold `undefined` made optional and its `undefined` removed. */
export type DefinedOnly<T> = {
  [K in keyof T as undefined extends T[K] ? never : K]: T[K];
} & {
  [K in keyof T as undefined extends T[K] ? K : never]?: Exclude<T[K], undefined>;
};
