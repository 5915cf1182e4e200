import { ApiException } from '@kubernetes/client-node';

/** The HTTP status of a Kubernetes API error, or undefined for transport errors. */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  if (typeof e?.code === 'number') return e.code;
  return undefined;
}

export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;
/** 409: AlreadyExists on create, Conflict on an update with a stale resourceVersion. */
export const isConflict = (err: unknown): boolean => statusCode(err) === 409;

/**
 * The API server's own message (`metav1.Status.message`). client-node 2.x keeps the body as a JSON string
 * for some errors and as an object for others.
 */
export function apiMessage(err: unknown): string {
  if (err instanceof ApiException) {
    let body = err.body as unknown;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        return (body as string) || `HTTP ${err.code}`;
      }
    }
    const message = (body as { message?: string } | undefined)?.message;
    return message ? `${message} (HTTP ${err.code})` : `HTTP ${err.code}`;
  }
  return err instanceof Error ? err.message : String(err);
}
