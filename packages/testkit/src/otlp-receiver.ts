import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One span an OTLP exporter sent, flattened: its service, ids and attributes. */
export interface ReceivedSpan {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Record<string, unknown>;
  /** the span's events, in order: name and attributes */
  events: Array<{ name: string; attributes: Record<string, unknown> }>;
  /** the spans it links to (not its parent) */
  links: Array<{ traceId: string; spanId: string }>;
}

type OtlpAttributes = Array<{ key: string; value: Record<string, unknown> }> | undefined;
const flatten = (attributes: OtlpAttributes): Record<string, unknown> => Object.fromEntries((attributes ?? []).map((a) => [a.key, Object.values(a.value)[0]]));

interface OtlpJsonBody {
  resourceSpans?: Array<{
    resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
    scopeSpans: Array<{ spans: Array<Record<string, unknown>> }>;
  }>;
}

/** An OTLP/HTTP JSON receiver on loopback: every span POSTed to /v1/traces, flattened into `spans`. */
export async function startOtlpReceiver(): Promise<{ url: string; spans: ReceivedSpan[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.headers['content-type']?.includes('json')) {
        const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as OtlpJsonBody;
        for (const rs of body.resourceSpans ?? []) {
          const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
          for (const s of rs.scopeSpans.flatMap((ss) => ss.spans)) {
            const attributes = flatten(s.attributes as OtlpAttributes);
            const events = ((s.events ?? []) as Array<{ name: string; attributes?: OtlpAttributes }>).map((e) => ({ name: e.name, attributes: flatten(e.attributes) }));
            const links = ((s.links ?? []) as Array<{ traceId: string; spanId: string }>).map((l) => ({ traceId: l.traceId, spanId: l.spanId }));
            spans.push({ service, name: s.name as string, traceId: s.traceId as string, spanId: s.spanId as string, parentSpanId: (s.parentSpanId as string) || undefined, attributes, events, links });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1/traces`, spans, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
