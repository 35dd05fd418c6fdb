/** A file a connector produced (an image, a video), on its way to where clients can fetch it. */
export interface AssetInput {
  /** relative path-like name, e.g. `standard.abc/1/9-ComfyUI_00001_.png`; see `assetKey` */
  key: string;
  data: Uint8Array;
  contentType: string;
}

/** A stored, verified asset: the URL goes into the job's result. */
export interface StoredAsset {
  key: string;
  url: string;
  size: number;
  /** hex SHA-256 of the content, as read back from the store */
  sha256: string;
  content_type: string;
}

/**
 * Where a worker puts the files its jobs produce. GPU machines are ephemeral,
 * so outputs must leave the machine before the job is reported done: `put`
 * resolves only once the store holds the content (verified by size and hash).
 */
export interface AssetStore {
  put(asset: AssetInput, signal?: AbortSignal): Promise<StoredAsset>;
}

/** The store did not end up holding what was written. */
export class AssetUploadError extends Error {
  override readonly name: string = 'AssetUploadError';
}

/**
 * The store refused because of how this worker is set up (a missing bucket,
 * refused credentials), not because of the asset: another worker may succeed.
 */
export class AssetStoreRefusedError extends AssetUploadError {
  override readonly name: string = 'AssetStoreRefusedError';
}

/**
 * Builds a key from parts, each reduced to `[A-Za-z0-9._-]` (so a filename a
 * service chose cannot climb out of the store's folder or break a URL).
 */
export function assetKey(...parts: Array<string | number>): string {
  return parts
    .map((part) => {
      const clean = String(part).replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^\.+/, '_');
      return clean.length === 0 ? '_' : clean.slice(0, 200);
    })
    .join('/');
}
