import { describe, expect, it } from 'vitest';
import { addressClass, webhookTargetProblem } from './webhook-target';

// Every way a URL can name this machine, its network or a metadata service,
// against the rule: http(s) only, and only public hosts unless allowPrivate.

describe('webhookTargetProblem', () => {
  const refused: Array<[string, RegExp]> = [
    // schemes
    ['file:///etc/passwd', /^scheme file is not allowed; a webhook URL is http:\/\/ or https:\/\/$/],
    ['gopher://example.com/_x', /^scheme gopher is not allowed/],
    ['ftp://example.com/hook', /^scheme ftp is not allowed/],
    ['javascript:alert(1)', /^scheme javascript is not allowed/],
    ['not a url', /^not a valid URL$/],
    // IPv4 loopback in every spelling the URL parser accepts
    ['http://127.0.0.1/hook', /^host 127\.0\.0\.1 is a loopback address; webhooks go to public hosts only$/],
    ['http://127.255.255.254:8080/', /^host 127\.255\.255\.254 is a loopback address/],
    ['http://127.1/', /^host 127\.0\.0\.1 is a loopback address/],
    ['http://2130706433/', /^host 127\.0\.0\.1 is a loopback address/],
    ['http://0x7f.0.0.1/', /^host 127\.0\.0\.1 is a loopback address/],
    ['http://0177.0.0.1/', /^host 127\.0\.0\.1 is a loopback address/],
    // this network, unspecified
    ['http://0.0.0.0/', /^host 0\.0\.0\.0 is the unspecified address/],
    ['http://0.1.2.3/', /^host 0\.1\.2\.3 is a 'this network' address/],
    // private
    ['http://10.0.0.1/', /^host 10\.0\.0\.1 is a private address/],
    ['https://10.255.255.255/', /is a private address/],
    ['http://172.16.0.1/', /^host 172\.16\.0\.1 is a private address/],
    ['http://172.31.255.255/', /is a private address/],
    ['http://192.168.1.1/', /^host 192\.168\.1\.1 is a private address/],
    // link-local and the metadata service
    ['http://169.254.169.254/latest/meta-data/', /^host 169\.254\.169\.254 is a link-local address; webhooks go to public hosts only$/],
    ['http://169.254.0.1/', /is a link-local address/],
    // carrier-grade NAT (Alibaba's metadata service is 100.100.100.200)
    ['http://100.64.0.1/', /^host 100\.64\.0\.1 is a carrier-grade NAT address/],
    ['http://100.100.100.200/', /carrier-grade NAT/],
    ['http://100.127.255.255/', /carrier-grade NAT/],
    // multicast, reserved, broadcast
    ['http://224.0.0.1/', /is a multicast address/],
    ['http://255.255.255.255/', /is a reserved address/],
    // IPv6
    ['http://[::1]/', /^host \[::1\] is a loopback address/],
    ['http://[0:0:0:0:0:0:0:1]/', /^host \[::1\] is a loopback address/],
    ['http://[::]/', /^host \[::\] is the unspecified address/],
    ['http://[fc00::1]/', /is a private address/],
    ['http://[fd12:3456:789a::1]/', /is a private address/],
    ['http://[fe80::1]/', /is a link-local address/],
    ['http://[febf::1]/', /is a link-local address/],
    ['http://[ff02::1]/', /is a multicast address/],
    // IPv6 forms of IPv4 addresses
    ['http://[::ffff:127.0.0.1]/', /^host \[::ffff:7f00:1\] is a loopback address/],
    ['http://[::ffff:169.254.169.254]/', /is a link-local address/],
    ['http://[::ffff:10.0.0.1]/', /is a private address/],
    ['http://[::ffff:0.0.0.0]/', /is the unspecified address/],
    ['http://[::ffff:100.64.0.1]/', /carrier-grade NAT/],
    ['http://[::127.0.0.1]/', /is a loopback address/],
    ['http://[64:ff9b::a9fe:a9fe]/', /is a link-local address/],
    // names
    ['http://localhost/', /^host localhost names this machine; webhooks go to public hosts only$/],
    ['http://LOCALHOST:3000/', /^host localhost names this machine/],
    ['http://localhost./', /names this machine/],
    ['http://api.localhost/', /^host api\.localhost names this machine/],
    ['http://metadata.google.internal/computeMetadata/v1/', /^host metadata\.google\.internal names a cloud metadata service/],
    ['http://metadata.google.internal./', /names a cloud metadata service/],
    ['http://metadata/', /names a cloud metadata service/],
    ['http://instance-data.ec2.internal/', /names a cloud metadata service/],
  ];

  it.each(refused)('refuses %s', (url, reason) => {
    expect(webhookTargetProblem(url)).toMatch(reason);
  });

  const allowed = [
    'https://example.com/hook',
    'http://example.com:8080/hook?x=1',
    'https://8.8.8.8/',
    'https://1.1.1.1/hook',
    'http://172.15.255.255/', // just below 172.16/12
    'http://172.32.0.1/', // just above it
    'http://100.63.255.255/', // just below 100.64/10
    'http://100.128.0.1/', // just above it
    'http://169.253.255.255/',
    'http://192.167.1.1/',
    'http://11.0.0.1/',
    'http://[2606:4700:4700::1111]/',
    'http://[2001:db8::ffff:7f00:1]/', // 127.0.0.1's bits, but not in a form that carries IPv4
    'http://localhost.example.com/', // a public name that merely starts with localhost
    'http://mylocalhost/',
    'http://metadata.example.com/',
  ];

  it.each(allowed)('lets %s through', (url) => {
    expect(webhookTargetProblem(url)).toBeUndefined();
  });

  it('with allowPrivate lets every host through, but still only http and https', () => {
    for (const [url] of refused.filter(([url]) => /^https?:/.test(url))) expect(webhookTargetProblem(url, { allowPrivate: true })).toBeUndefined();
    expect(webhookTargetProblem('file:///etc/passwd', { allowPrivate: true })).toMatch(/^scheme file is not allowed/);
    expect(webhookTargetProblem('gopher://localhost/', { allowPrivate: true })).toMatch(/^scheme gopher is not allowed/);
  });
});

describe('addressClass', () => {
  it('classifies literal addresses as the webhook service will after resolving a name', () => {
    expect(addressClass('127.0.0.53')).toBe('loopback');
    expect(addressClass('10.1.2.3')).toBe('private');
    expect(addressClass('169.254.169.254')).toBe('link-local');
    expect(addressClass('::ffff:192.168.0.1')).toBe('private');
    expect(addressClass('fe80::1%eth0')).toBe('link-local');
    expect(addressClass('93.184.216.34')).toBeUndefined();
    expect(addressClass('2606:4700::1')).toBeUndefined();
    expect(addressClass('not-an-address')).toBeUndefined();
    expect(addressClass('1:2:3:4:5:6:7:8:9')).toBeUndefined();
  });
});
