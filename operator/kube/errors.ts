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
