import { EmpApiError } from '@emp/client';
import { DEFAULT_SERVICES, type SubmitJobInput } from '@emp/core';
import { useState } from 'react';
import { type Connection, describeError } from '../api/connection';
import { href, navigate, useNotice } from './common';

const EXAMPLE_PAYLOADS: Record<string, string> = {
  simulation: '{\n  "duration_ms": 4000,\n  "steps": 8\n}',
  ollama: '{\n  "model": "llama3.2",\n  "prompt": "Why is the sky blue?"\n}',
  openai: '{\n  "model": "gpt-4o-mini",\n  "messages": [{ "role": "user", "content": "Hello" }]\n}',
};

function parseJson(text: string, name: string): { value?: unknown; error?: string } {
  if (text.trim() === '') return { value: undefined };
  try {
    return { value: JSON.parse(text) as unknown };
  } catch (error) {
    return { error: `${name}: not valid JSON (${(error as Error).message})` };
  }
}

/** Submit a test job (service, payload, requirements) and go to its page to watch it run. */
export function SubmitView({ connection }: { connection: Connection }) {
  const [service, setService] = useState('simulation');
  const [payload, setPayload] = useState(EXAMPLE_PAYLOADS.simulation!);
  const [requirements, setRequirements] = useState('{}');
  const [priority, setPriority] = useState(0);
  const [expected, setExpected] = useState('');
  const [tenant, setTenant] = useState('');
  const [problems, setProblems] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const notice = useNotice();

  const submit = async () => {
    const parsedPayload = parseJson(payload, 'payload');
    const parsedRequirements = parseJson(requirements, 'requirements');
    const local = [parsedPayload.error, parsedRequirements.error].filter((e): e is string => e !== undefined);
    setProblems(local);
    if (local.length > 0) return;
    setBusy(true);
    try {
      const job: SubmitJobInput = {
        service,
        // a JSON body: undefined fields are not sent; an empty priority or tenant stays out
        payload: parsedPayload.value,
        requirements: parsedRequirements.value as SubmitJobInput['requirements'],
        priority: priority || undefined,
        tenant: tenant || undefined,
        // a job naming no pool is routed by it (docs/pools.md); empty: by history, else the default pool
        expected_duration_s: expected.trim() === '' ? undefined : Number(expected),
      };
      const submitted = await connection.client.submit(job);
      notice('ok', `submitted ${submitted.id} (${submitted.state})`);
      navigate(href('jobs', submitted.id));
    } catch (error) {
      setProblems(error instanceof EmpApiError && error.issues.length > 0 ? error.issues.map((i) => `${i.path || 'job'}: ${i.message}`) : [describeError(error)]);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="panel submit" aria-label="submit a test job">
      <h3>Submit a test job</h3>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <div className="form-row">
          <label className="stacked">
            Service
            <input
              list="services"
              value={service}
              onChange={(e) => {
                const next = e.target.value.trim();
                if (EXAMPLE_PAYLOADS[next] && payload === EXAMPLE_PAYLOADS[service]) setPayload(EXAMPLE_PAYLOADS[next]!);
                setService(next);
              }}
              required
            />
            <datalist id="services">
              {DEFAULT_SERVICES.map((s) => (
                <option key={s} value={s} />
              ))}
            </datalist>
          </label>
          <label className="stacked">
            Priority
            <input type="number" min={-1000} max={1000} value={priority} onChange={(e) => setPriority(Number(e.target.value))} />
          </label>
          <label className="stacked">
            Expected duration (s)
            <input type="number" min={0} step="any" value={expected} onChange={(e) => setExpected(e.target.value)} placeholder="learned" aria-label="expected duration in seconds" />
          </label>
          {connection.identity.tenant === undefined && (
            <label className="stacked">
              Tenant
              <input value={tenant} onChange={(e) => setTenant(e.target.value.trim())} placeholder="default" />
            </label>
          )}
        </div>
        <label className="stacked">
          Payload (JSON)
          <textarea className="mono" rows={8} value={payload} onChange={(e) => setPayload(e.target.value)} spellCheck={false} />
        </label>
        <label className="stacked">
          Requirements (JSON: pool, hardware, models, constraints…)
          <textarea className="mono" rows={4} value={requirements} onChange={(e) => setRequirements(e.target.value)} spellCheck={false} />
        </label>
        {problems.length > 0 && (
          <ul className="problems" role="alert">
            {problems.map((p) => (
              <li key={p}>{p}</li>
            ))}
          </ul>
        )}
        <div className="actions">
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Submitting…' : 'Submit and watch'}
          </button>
        </div>
      </form>
    </section>
  );
}
