/**
 * Where a webhook may be sent: the one check of a webhook URL, used by the API
 * at submit and meant for the webhook service at delivery (which must also
 * resolve names and check each address with `addressClass`: a public name
 * can point at a private address). Pure string work, so browsers load it too.
 */

export interface WebhookTargetOptions {
  /** let hosts on loopback, private, link-local and other non-public addresses through (local development only) */
  allowPrivate?: boolean;
}

/** Why an address is not a public one. */
export type AddressClass = 'unspecified' | 'this-network' | 'loopback' | 'private' | 'link-local' | 'shared' | 'multicast' | 'reserved';

const DESCRIPTIONS: Record<AddressClass, string> = {
  unspecified: 'the unspecified address',
  'this-network': "a 'this network' address (0.0.0.0/8)",
  loopback: 'a loopback address',
  private: 'a private address',
  'link-local': 'a link-local address',
  shared: 'a carrier-grade NAT address (100.64.0.0/10)',
  multicast: 'a multicast address',
  reserved: 'a reserved address',
};

/** Names that always mean this machine or a cloud metadata service (`*.localhost` too). */
const LOCAL_NAMES = new Set(['localhost', 'metadata', 'metadata.google.internal', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Why `url` may not be a webhook target, or undefined when it may: the scheme
 * is http or https, and (unless `allowPrivate`) the host is neither a literal
 * address outside the public internet nor a name for this machine or a cloud
 * metadata service. The reason starts with what is wrong ("host 10.0.0.1 is a
 * private address; ...") so a caller puts the field in front of it.
 */
export function webhookTargetProblem(url: string, options: WebhookTargetOptions = {}): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a valid URL';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return `scheme ${parsed.protocol.slice(0, -1)} is not allowed; a webhook URL is http:// or https://`;
  }
  if (options.allowPrivate) return undefined;
  const host = parsed.hostname;
  const refused = '; webhooks go to public hosts only';
  if (host.startsWith('[')) {
    const kind = addressClass(host.slice(1, -1));
    return kind ? `host ${host} is ${DESCRIPTIONS[kind]}${refused}` : undefined;
  }
  // the URL parser has already turned every IPv4 spelling (127.1, 0x7f.0.0.1, 2130706433) into dotted decimal
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) {
    const kind = addressClass(host);
    return kind ? `host ${host} is ${DESCRIPTIONS[kind]}${refused}` : undefined;
  }
  const name = host.replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost')) return `host ${host} names this machine${refused}`;
  if (LOCAL_NAMES.has(name)) return `host ${host} names a cloud metadata service${refused}`;
  return undefined;
}

/**
 * What kind of non-public address `ip` (IPv4 dotted decimal or IPv6 without
 * brackets) is, or undefined for a public one (or no address at all).
 * IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, compatible
 * ::a.b.c.d, NAT64 64:ff9b::/96) are judged by that address.
 */
export function addressClass(ip: string): AddressClass | undefined {
  const v4 = ipv4Octets(ip);
  if (v4) return ipv4Class(v4);
  const groups = ipv6Groups(ip);
  return groups ? ipv6Class(groups) : undefined;
}

function ipv4Octets(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p))) return undefined;
  const octets = parts.map(Number);
  return octets.every((o) => o <= 255) ? octets : undefined;
}

function ipv4Class([a, b, c, d]: number[]): AddressClass | undefined {
  if (a === 0) return b === 0 && c === 0 && d === 0 ? 'unspecified' : 'this-network';
  if (a === 127) return 'loopback';
  if (a === 10 || (a === 172 && b! >= 16 && b! <= 31) || (a === 192 && b === 168)) return 'private';
  if (a === 169 && b === 254) return 'link-local';
  if (a === 100 && b! >= 64 && b! <= 127) return 'shared';
  if (a! >= 224 && a! <= 239) return 'multicast';
  if (a! >= 240) return 'reserved';
  return undefined;
}

/** The eight 16-bit groups of an IPv6 address (with `::` and a dotted IPv4 tail expanded), or undefined. */
function ipv6Groups(text: string): number[] | undefined {
  let address = text.toLowerCase();
  if (address.includes('%')) address = address.slice(0, address.indexOf('%')); // a zone id (fe80::1%eth0)
  const tail = /(?:^|:)(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (tail) {
    const octets = ipv4Octets(tail[1]!);
    if (!octets) return undefined;
    const hex = `${((octets[0]! << 8) | octets[1]!).toString(16)}:${((octets[2]! << 8) | octets[3]!).toString(16)}`;
    address = address.slice(0, address.length - tail[1]!.length) + hex;
  }
  const halves = address.split('::');
  if (halves.length > 2) return undefined;
  const parse = (part: string) => (part === '' ? [] : part.split(':'));
  const head = parse(halves[0]!);
  const rest = halves.length === 2 ? parse(halves[1]!) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...rest];
  if (!all.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return all.map((g) => Number.parseInt(g, 16));
}

function ipv6Class(g: number[]): AddressClass | undefined {
  const zeros = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  const embedded = () => ipv4Class([g[6]! >> 8, g[6]! & 0xff, g[7]! >> 8, g[7]! & 0xff]);
  if (zeros(0, 8)) return 'unspecified';
  if (zeros(0, 7) && g[7] === 1) return 'loopback';
  if (zeros(0, 5) && g[5] === 0xffff) return embedded(); // IPv4-mapped
  if (zeros(0, 6)) return embedded() ?? 'reserved'; // IPv4-compatible (deprecated)
  if (g[0] === 0x64 && g[1] === 0xff9b && zeros(2, 6)) return embedded(); // NAT64 well-known prefix
  if ((g[0]! & 0xfe00) === 0xfc00) return 'private'; // unique local fc00::/7
  if ((g[0]! & 0xffc0) === 0xfe80) return 'link-local';
  if ((g[0]! & 0xffc0) === 0xfec0) return 'private'; // site-local (deprecated)
  if ((g[0]! & 0xff00) === 0xff00) return 'multicast';
  return undefined;
}
