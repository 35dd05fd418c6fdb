/**
 * The whole local stack as `emp start` runs it (API, machine, monitor,
 * webhooks around one Redis), for tests and development aids that look at
 * all of it at once: the monitor's browser tests and its flood page.
 */
export { type LocalStack, type LocalStackOptions, startLocalStack } from '@emp/cli/stack';
