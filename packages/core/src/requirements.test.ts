import { describe, expect, it } from 'vitest';
import { SubmitJobInput } from './job';
import { requirementClass, requirementClassOfParsed } from './requirements';

describe('the requirement class of a parsed job', () => {
  const jobs = [
    { service: 'simulation' },
    { service: 'comfyui' },
    { service: 'simulation', requirements: { pool: 'fast' } },
    { service: 'simulation', requirements: { models: ['b', 'a', 'a'] } },
    { service: 'simulation', requirements: { models: ['a', 'b'] } },
    { service: 'simulation', requirements: { models: [] } },
    { service: 'simulation', requirements: { hardware: { gpu_memory_gb: 24 }, constraints: { region: 'eu', tags: ['x', 'y'] } } },
    { service: 'simulation', requirements: { constraints: { tags: ['y', 'x'], region: 'eu' }, hardware: { gpu_memory_gb: 24 } } },
    { service: 'simulation', tenant: 'acme', requirements: { isolation: 'strict' as const } },
    { service: 'simulation', tenant: 'other', requirements: { isolation: 'strict' as const } },
    { service: 'simulation', tenant: 'other', requirements: { isolation: 'shared' as const } },
    { service: 'simulation', tenant: 'acme', requirements: { exclude: { region: 'us' }, custom_nodes: ['n1'] } },
  ].map((input) => SubmitJobInput.parse(input));

  it('is the class requirementClass makes, asked once or again, in any order', () => {
    const expected = jobs.map((job) => requirementClass(job));
    expect(jobs.map((job) => requirementClassOfParsed(job))).toEqual(expected);
    expect([...jobs].reverse().map((job) => requirementClassOfParsed(job))).toEqual([...expected].reverse());
    // equal requirements written otherwise share a class; a strict job's tenant is part of it
    expect(requirementClassOfParsed(jobs[3]!).id).toBe(requirementClassOfParsed(jobs[4]!).id);
    expect(requirementClassOfParsed(jobs[6]!).id).toBe(requirementClassOfParsed(jobs[7]!).id);
    expect(requirementClassOfParsed(jobs[8]!).id).not.toBe(requirementClassOfParsed(jobs[9]!).id);
    expect(requirementClassOfParsed(jobs[0]!).id).toBe(requirementClassOfParsed(jobs[2]!).id);
  });

  it('is made afresh for requirements too large to remember', () => {
    const constraints = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`label-${i}`, `value-${i}`]));
    const job = SubmitJobInput.parse({ service: 'simulation', requirements: { constraints } });
    expect(requirementClassOfParsed(job)).toEqual(requirementClass(job));
  });
});
