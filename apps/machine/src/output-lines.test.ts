import { describe, expect, it } from 'vitest';
import { LineSplitter, truncateUtf8 } from './output-lines';

function split(chunks: string[], maxBytes?: number): string[] {
  const lines: string[] = [];
  const splitter = new LineSplitter((line) => lines.push(line), maxBytes);
  for (const chunk of chunks) splitter.push(chunk);
  splitter.end();
  return lines;
}

describe('cutting process output into lines', () => {
  it('ends lines at \\n, \\r\\n and a lone \\r, across chunk boundaries, and skips empty ones', () => {
    expect(split(['one\ntw', 'o\r', '\nthree\r\n\n', '50%\r100%\rdone'])).toEqual(['one', 'two', 'three', '50%', '100%', 'done']);
  });

  it('cuts a line longer than the limit and drops its rest, however it arrives', () => {
    expect(split(['a'.repeat(6), 'b'.repeat(6), 'c'.repeat(6), '\nnext'], 8)).toEqual(['aaaaaabb', 'next']);
  });

  it('truncates by UTF-8 bytes without splitting a character', () => {
    expect(truncateUtf8('ééé', 5)).toBe('éé');
    expect(Buffer.byteLength(truncateUtf8('€'.repeat(2_000)))).toBeLessThanOrEqual(4_096);
    expect(truncateUtf8('short')).toBe('short');
  });
});
