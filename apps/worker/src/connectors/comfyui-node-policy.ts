import type { ComfyNodePolicy } from '@emp/core';
import { JobFailure } from '../connector';

/** One node the policy refuses, and the rule that refused it. */
export interface RefusedNode {
  node_id: string;
  class_type: string;
  rule: 'deny' | 'allow';
  /** the deny entry it matched (absent for `allow`: it matched none of the allow list) */
  pattern?: string;
}

function matcher(pattern: string): (classType: string) => boolean {
  if (!pattern.includes('*')) {
    const exact = pattern.toLowerCase();
    return (classType) => classType.toLowerCase() === exact;
  }
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  const regex = new RegExp(`^${source}$`, 'is');
  return (classType) => regex.test(classType);
}

/** The nodes of `workflow` the policy refuses, in the workflow's order. */
export function refusedNodes(policy: ComfyNodePolicy, workflow: Record<string, { class_type: string }>): RefusedNode[] {
  const deny = policy.deny.map((pattern) => ({ pattern, matches: matcher(pattern) }));
  const allow = policy.allow?.map(matcher);
  const refused: RefusedNode[] = [];
  for (const [nodeId, node] of Object.entries(workflow)) {
    const denied = deny.find((rule) => rule.matches(node.class_type));
    if (denied) refused.push({ node_id: nodeId, class_type: node.class_type, rule: 'deny', pattern: denied.pattern });
    else if (allow && !allow.some((matches) => matches(node.class_type))) refused.push({ node_id: nodeId, class_type: node.class_type, rule: 'allow' });
  }
  return refused;
}

/**
 * Throws the job's failure when the policy refuses any node of its workflow:
 * non_retryable `NodeRefused`, naming each node id, its class_type and the
 * rule. Checked before anything reaches ComfyUI.
 */
export function enforceNodePolicy(service: string, policy: ComfyNodePolicy | undefined, workflow: Record<string, { class_type: string }>): void {
  if (!policy) return;
  const refused = refusedNodes(policy, workflow);
  if (refused.length === 0) return;
  const reasons = refused
    .slice(0, 10)
    .map((r) => `node ${r.node_id} (${r.class_type}): ${r.rule === 'deny' ? `matches deny rule '${r.pattern}'` : 'not on the allow list'}`);
  const more = refused.length > 10 ? `; and ${refused.length - 10} more` : '';
  throw new JobFailure('non_retryable', `${service}: this machine's node policy refuses the workflow: ${reasons.join('; ')}${more}`, {
    type: 'NodeRefused',
    details: { refused: refused.slice(0, 50) },
  });
}
