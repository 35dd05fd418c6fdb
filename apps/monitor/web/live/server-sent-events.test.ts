import { describe, expect, it } from 'vitest';
import { readServerSentEvents } from './server-sent-events';

function responseOf(chunks: string[]): Response {
  const encoder = new TextEncoder();
  return new Response(new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  }));
}

describe('reading Server-Sent Events from a fetch response', () => {
  it('joins lines split across chunks, keeps ids and types, skips comments, and joins multi-line data', async () => {
    const response = responseOf([': keep-alive\n\nid: 1-0\nevent: log\nda', 'ta: {"line":"a"}\n\n', 'id: 2-0\r\ndata: first\r\ndata: second\r\n\r\n', 'data: unterminated']);
    const events = [];
    for await (const event of readServerSentEvents(response)) events.push(event);
    expect(events).toEqual([
      { id: '1-0', event: 'log', data: '{"line":"a"}' },
      { id: '2-0', event: 'message', data: 'first\nsecond' },
    ]);
  });
});
