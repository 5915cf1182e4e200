/**
 * The floor for any Node.js HTTP/2 proxy: node:http2's secure server (client certificate required, ALPN h2) that
 * sends each stream to the upstream as a stream of one shared h2c connection and the answer back, trailers
 * included, with no identity fields, limits, timeouts, metrics or logs. Benchmarked beside the sidecar's HTTP/2
 * path to show how much of the gap to nginx is node:http2 itself. Not part of the product.
 *   node bench/node-h2-relay.ts PORT UPSTREAM_PORT CERT KEY CA
 */
import { readFileSync } from 'node:fs';
import { connect, constants, createSecureServer, type IncomingHttpHeaders } from 'node:http2';

const [port, upstreamPort, cert, key, ca] = process.argv.slice(2);
const upstream = connect(`http://127.0.0.1:${upstreamPort}`);
const server = createSecureServer({
  cert: readFileSync(cert!),
  key: readFileSync(key!),
  ca: readFileSync(ca!),
  requestCert: true,
  rejectUnauthorized: true,
  settings: { maxConcurrentStreams: 100 },
});

server.on('stream', (stream, headers) => {
  const fields: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (name !== ':scheme') fields[name] = value;
  const up = upstream.request(fields);
  let trailers: IncomingHttpHeaders = {};
  up.on('response', (answer) => {
    // The client may have gone away (the load client resets its streams when it stops).
    if (stream.destroyed || stream.closed) return void up.close(constants.NGHTTP2_CANCEL);
    const status = answer[constants.HTTP2_HEADER_STATUS];
    stream.respond({ ...answer, [constants.HTTP2_HEADER_STATUS]: status }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers(trailers));
    up.pipe(stream);
  });
  up.on('trailers', (t) => (trailers = t));
  up.on('error', () => stream.close(constants.NGHTTP2_INTERNAL_ERROR));
  stream.on('error', () => up.close(constants.NGHTTP2_CANCEL));
  stream.pipe(up);
});
server.on('sessionError', () => undefined);
upstream.on('error', (err) => {
  process.stderr.write(`node-h2-relay: the upstream connection failed: ${err.message}\n`);
  process.exit(1);
});
server.listen(Number(port), '127.0.0.1');
