/** Longest line kept of a process's output (bytes); the rest of a longer line is dropped. */
export const MAX_LINE_BYTES = 4 * 1024;

/** `text` cut to at most `maxBytes` of UTF-8, never in the middle of a character. */
export function truncateUtf8(text: string, maxBytes = MAX_LINE_BYTES): string {
  if (text.length <= maxBytes / 4 || Buffer.byteLength(text) <= maxBytes) return text;
  return Buffer.from(text).subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, '');
}

/**
 * Cuts a process's output into lines as it arrives: `\n`, `\r\n` and a lone
 * `\r` (progress bars redraw with it) end a line; empty lines are skipped; a
 * line longer than `maxBytes` is cut there and the rest of it dropped, so a
 * process that never writes a newline cannot make the agent buffer without end.
 */
export class LineSplitter {
  private partial = '';
  private dropping = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxBytes = MAX_LINE_BYTES,
  ) {}

  push(chunk: string): void {
    const parts = chunk.split(/\r\n|\r|\n/);
    parts.forEach((part, index) => {
      if (!this.dropping) this.partial += part;
      const ended = index < parts.length - 1;
      if (ended) {
        this.emit();
        this.dropping = false;
      } else if (this.partial.length > this.maxBytes) {
        this.emit();
        this.dropping = true;
      }
    });
  }

  /** The output ended: whatever is left is the last line. */
  end(): void {
    this.emit();
    this.dropping = false;
  }

  private emit(): void {
    const line = this.partial;
    this.partial = '';
    if (line !== '') this.onLine(truncateUtf8(line, this.maxBytes));
  }
}
