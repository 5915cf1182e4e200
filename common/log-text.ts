/**
 * What may go into a log line, event or status, shared by the operator's winston logger (operator/log.ts) and
 * the sidecar's own (sidecar/log.ts): no private key, and API errors in the API server's words. No logger
 * library here, so the sidecar can use it without loading one.
 */
const PRIVATE_KEY_PEM = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?(-----END \1PRIVATE KEY-----|$)/g;

/** Anything that looks like PEM private-key material, replaced. */
export function redactPrivateKeys(text: string): string {
  return text.replace(PRIVATE_KEY_PEM, '[redacted private key]');
}

/**
 * A one-line description of an error for logs, events and status. Kubernetes API errors (client-node's
 * ApiException: numeric `code`, `body` as a JSON string or object) become the API server's own message.
 */
export function errorMessage(err: unknown): string {
  const e = err as { code?: unknown; body?: unknown; message?: string } | undefined;
  let text = err instanceof Error ? err.message : String(err);
  if (typeof e?.code === 'number' && e.body !== undefined) {
    let body = e.body;
    try {
      if (typeof body === 'string') body = JSON.parse(body);
    } catch {
      // not JSON: keep the raw text
    }
    const message = typeof body === 'object' && body ? (body as { message?: string }).message : String(body);
    text = message ? `${message} (HTTP ${e.code})` : `HTTP ${e.code}`;
  }
  return redactPrivateKeys(text);
}
