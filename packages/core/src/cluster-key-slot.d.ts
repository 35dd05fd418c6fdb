/** Typings for cluster-key-slot (the CRC16 slot function ioredis itself uses), which ships none. */
declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0..16383) of a key, honouring its `{hash tag}`, as `CLUSTER KEYSLOT` computes it. */
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
