import type { TLSSocket } from 'node:tls';
import { CLOSE_GRACE_MS } from './forward.ts';
import { CRLFCRLF, errorResponse, TCHAR } from './http1.ts';
import type { RefusalReason } from './refusal-log.ts';

/**
 * What a client refused after its handshake is told. Every listener serves HTTP, so the refusal is an HTTP
 * answer, as nginx gives one ("400 No required SSL certificate was sent", "400 The SSL certificate error")
 * and Envoy's RBAC filter does (403): curl then prints why instead of "Empty reply from server".
 *
 * Why not a TLS alert: Node's tls does all certificate checks in JavaScript after OpenSSL has finished the
 * handshake (its verify callback always lets the handshake go on), and it has no API to send a fatal alert
 * on an established connection. What a server can make OpenSSL send is only what OpenSSL decides during the
 * handshake: protocol_version for TLS below 1.2, handshake_failure for no common cipher or group, and so on
 * (Node flushes them before the sidecar closes such a connection), and certificate_required /
 * handshake_failure for a missing certificate if the listener used `rejectUnauthorized` (it does not: that
 * would turn the strict listener's readable 400 into an alert). Unknown CA, expired, revoked and not allowed
 * can only be answered after the handshake. A refused client that does not speak HTTP gets the one alert Node
 * can send then: close_notify.
 */

/** The status and one line of text for each refusal: what went wrong and what to do (README, Troubleshooting). */
const ANSWERS: Record<RefusalReason, { status: 400 | 403; title: string; why: string }> = {
  no_certificate: {
    status: 400,
    title: 'No required SSL certificate was sent',
    why: "this listener requires a client certificate; send the client's tls.crt and tls.key",
  },
  unknown_ca: {
    status: 400,
    title: 'The SSL certificate error',
    why: "the client certificate is not issued by this endpoint's CA (or is self-signed)",
  },
  expired: {
    status: 400,
    title: 'The SSL certificate error',
    why: 'the client certificate has expired; re-read the client Secret (the operator renews it)',
  },
  revoked: {
    status: 400,
    title: 'The SSL certificate error',
    why: "the client certificate is revoked (in the endpoint's CRL); the client was removed from spec.clients",
  },
  bad_certificate: {
    status: 400,
    title: 'The SSL certificate error',
    why: 'the client certificate cannot be used here (not yet valid, or not for client authentication)',
  },
  not_allowed: {
    status: 403,
    title: 'Access denied',
    why: "the client certificate is valid, but its name is not in this endpoint's allowedClients",
  },
  protocol: { status: 400, title: 'Bad Request', why: 'the request could not be read' },
};

type RefusalFacts = { reason: RefusalReason; detail?: string; subject?: string };

/** The status and text a refused client is told, in whichever protocol it speaks. */
export function refusalAnswer(refusal: RefusalFacts): { status: 400 | 403; text: string } {
  const { status, title, why } = ANSWERS[refusal.reason];
  const who = refusal.subject ? ` (certificate ${refusal.subject})` : '';
  const code = refusal.reason === 'bad_certificate' && refusal.detail ? ` [${refusal.detail}]` : '';
  return { status, text: `${title} (${refusal.reason}): ${why}${who}${code}\n` };
}

/** The complete HTTP response (status line to body, `Connection: close`) for a refusal. */
export function refusalResponse(refusal: RefusalFacts): string {
  const { status, text } = refusalAnswer(refusal);
  return errorResponse(status, text);
}

const REQUEST_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP\/\d\.\d$/;

/**
 * What to do with the bytes a refused client has sent so far: `wait` for the rest of its request head,
 * answer in `http` (a request head arrived: the answer is a response to it, never an unsolicited one), or
 * close with no answer (`other`: not HTTP). `final` (the client half-closed, or the headers timeout passed)
 * answers in HTTP whatever has begun like a request line. At most `maxBytes` are looked at.
 */
export function refusedInput(bytes: Buffer, maxBytes: number, final = false): 'wait' | 'http' | 'other' {
  let i = 0;
  while (i < bytes.length && TCHAR[bytes[i]!]) i++;
  if (i === bytes.length) return final || bytes.length >= maxBytes ? 'other' : 'wait';
  if (i === 0 || bytes[i] !== 0x20) return 'other';
  const lineEnd = bytes.indexOf('\r\n');
  if (lineEnd >= 0 && !REQUEST_LINE.test(bytes.toString('latin1', 0, lineEnd))) return 'other';
  if (final || bytes.length >= maxBytes || bytes.indexOf(CRLFCRLF) >= 0) return 'http';
  return 'wait';
}

/**
 * Answers a refused connection (the decision is made by the caller): waits for the client's request head
 * (up to `headersTimeoutMs` and `maxHeaderBytes`), writes `response` if it is HTTP, ends the TLS session
 * (close_notify), then reads and drops whatever the client still sends until it closes, at most
 * CLOSE_GRACE_MS: closing with unread bytes would make the kernel reset the connection, and a reset can
 * destroy the answer before the client has read it.
 */
export function answerRefused(
  socket: TLSSocket,
  response: string,
  limits: { headersTimeoutMs: number; maxHeaderBytes: number },
): void {
  socket.allowHalfOpen = true; // a client may half-close after its request and still read the answer
  let seen: Buffer | null = null;
  let answered = false;
  const answer = (http: boolean) => {
    if (answered) return;
    answered = true;
    seen = null;
    clearTimeout(timer);
    if (http) socket.write(response, 'latin1');
    socket.end();
    timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    timer.unref();
  };
  const decide = (final: boolean) => {
    const next = refusedInput(seen ?? Buffer.alloc(0), limits.maxHeaderBytes, final);
    if (next !== 'wait') answer(next === 'http');
  };
  let timer = setTimeout(() => decide(true), limits.headersTimeoutMs);
  timer.unref();
  socket.on('data', (chunk: Buffer) => {
    if (answered) return;
    seen = seen ? Buffer.concat([seen, chunk]) : chunk;
    decide(false);
  });
  socket.on('end', () => decide(true));
  socket.on('error', () => socket.destroy());
  socket.on('close', () => clearTimeout(timer));
}
