import type { HeldCertificate } from './ca-policy.ts';
import type { RevokedEntry } from './ca-state.ts';
import type { Write } from './owned-objects.ts';
import type { Note } from './plan.ts';

/** The Secret of a client no longer in spec.clients, and the still-valid certificates it held. */
export interface RemovedClient {
  client: string;
  secretName: string;
  uid?: string;
  held: readonly HeldCertificate[];
}

/**
 * A client removed from the spec is revoked: every certificate it held that has not expired goes into the
 * ledger (and so into the CRL), and its Secret is deleted. The apply rule writes the ledger before deleting.
 */
export function removedClients(
  removed: readonly RemovedClient[],
  revoked: readonly RevokedEntry[],
  now: Date,
): { revoked: RevokedEntry[]; deletions: Write[]; notes: Note[] } {
  const known = new Set(revoked.map((entry) => entry.serial));
  const added: RevokedEntry[] = [];
  const notes: Note[] = [];
  for (const { client, secretName, held } of removed) {
    const fresh = held
      .filter((cert) => !known.has(cert.serial) && new Date(cert.notAfter) > now)
      .map((cert) => ({ ...cert, client, revokedAt: now.toISOString() }));
    added.push(...fresh);
    const serials = fresh.map((entry) => entry.serial);
    notes.push({
      type: 'Normal',
      reason: 'ClientRevoked',
      message: `Client ${client} was removed from spec.clients: deleted Secret ${secretName} and revoked ${serials.length ? serials.join(', ') : 'nothing still valid'}`,
    });
  }
  const deletions: Write[] = removed.map(({ secretName, uid }) => ({
    verb: 'delete',
    kind: 'Secret',
    name: secretName,
    uid,
  }));
  return { revoked: added, deletions, notes };
}
