import { decodeMachine } from '@emp/core';
import type { Command } from 'commander';
import { duration } from '../format';
import { cell, registerRegistryListing, since } from '../registry-listing';

export function registerMachines(program: Command): void {
  registerRegistryListing(program, {
    command: 'machines',
    description: 'registered machines: state, last status, last operator command (offline ones stay listed)',
    plural: 'machines',
    empty: 'no machines have registered yet (`npm start` runs a simulated one)',
    list: (broker, pool) => broker.machines(pool),
    decode: decodeMachine,
    headers: ['MACHINE', 'STATE', 'FOR', 'LAST SEEN', 'WORKERS', 'LAST COMMAND'],
    row: (m, now) => [
      cell(m, 'state', m.state, ''),
      since(now, m.state_since),
      since(now, m.last_seen, ' ago'),
      cell(m, 'workers', m.workers?.join(', ')),
      m.last_command
        ? `${m.last_command}${m.last_command_service ? ` ${m.last_command_service}` : ''}${m.last_command_model ? ` ${m.last_command_model}` : ''} (${m.last_command_at === undefined ? '?' : duration(now - m.last_command_at)} ago)`
        : cell(m, 'last_command', undefined),
    ],
  });
}
