import * as k8s from '@kubernetes/client-node';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseDuration } from '../../operator/api/duration.ts';
import { SIDECAR_ADMIN_PORT } from '../../operator/api/injection.ts';
import { ENDPOINT_LABEL, ENDPOINT_RESOURCE, type MtlsEndpoint } from '../../operator/api/types.ts';
import { issueCA, issueServer } from '../../operator/pki/issue.ts';
import { createTestNamespace, deleteTestNamespace, kubeConfig, kubeconfigPath, waitFor } from '../support/cluster.ts';
import { condition, installCrd } from '../support/endpoints.ts';
import {
  b64,
  certNames,
  findKeyMaterial,
  prng,
  reportSummary,
  secretProblems,
  SEED,
  serialOf,
  sleep,
  spawnOperator,
  waitHealthy,
  type OperatorProcess,
} from './support.ts';

// Hostile input for the operator, against the real API server and the real `mtls-operator controller` process:
// a generated corpus of malformed MtlsEndpoints, garbage written into the Secrets it manages, and a search of
// everything it said (logs, Events, status, error messages) for private key material.

const { group, version, plural } = ENDPOINT_RESOURCE;
const MANAGED = 'app.kubernetes.io/managed-by=mtls-operator';
/** The spawned operator's --ca-propagation-delay: a CA must live four times that for a graceful rollover. */
const CA_PROPAGATION_DELAY = '5m';
const MIN_CA_VALIDITY_MS = 4 * parseDuration(CA_PROPAGATION_DELAY);

const summary = { tried: 0, handled: 0, refused: 0, invalid: 0, valid: 0, corruptions: 0, repaired: 0, leaks: -1 };

// ---- the documented rules (README "The MtlsEndpoint", docs/DESIGN.md contract 1), as an oracle -------------------

type Outcome = 'refused' | 'invalid' | 'valid';

interface Case {
  /** What the case tries, for failure messages. */
  what: string;
  name: string;
  /** The whole object's metadata (default: { name }). */
  metadata?: Record<string, unknown>;
  /** The spec as sent; `NO_SPEC` leaves it out. */
  spec: unknown;
  extra?: Record<string, unknown>;
  /** fieldValidation=Strict: unknown fields are refused instead of dropped. */
  strict?: boolean;
  expect: Outcome;
  /** refused: the API server's message names one of these; invalid: the Ready=False message does. */
  fields: string[];
  /** Unknown fields that must have been dropped from the stored object. */
  pruned?: string[];
}

const NO_SPEC = Symbol('no spec');
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_NAME = /^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
const MODES = ['standard', 'flexible', 'strict'];
const KEY_ALGORITHMS = ['ECDSA-P256', 'ECDSA-P384', 'RSA-2048', 'RSA-3072', 'RSA-4096'];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPort = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
const chars = (s: string) => [...s].length;
const present = (v: unknown) => v !== undefined && v !== null;

function labelKeyValid(key: string): boolean {
  const slash = key.lastIndexOf('/');
  const [prefix, name] = slash >= 0 ? [key.slice(0, slash), key.slice(slash + 1)] : [undefined, key];
  if (!LABEL_NAME.test(name)) return false;
  return prefix === undefined || (prefix.length <= 253 && DNS_NAME.test(prefix) && !prefix.startsWith('*'));
}

/** Milliseconds of a duration the schema admits, 'overflow' past Go's longest, undefined if not a duration. */
function durationMs(v: unknown): number | 'overflow' | undefined {
  if (typeof v !== 'string' || chars(v) > 32 || !DURATION.test(v)) return undefined;
  try {
    return parseDuration(v);
  } catch {
    return 'overflow';
  }
}

/**
 * The outcome the documented rules give a spec: the fields the API server must refuse (it names one of them),
 * else the fields the controller must report with Ready=False, else valid.
 */
function oracle(spec: unknown, strict: boolean, unknownPaths: string[]): { expect: Outcome; fields: string[] } {
  const refused: string[] = [];
  const invalid: string[] = [];
  if (strict && unknownPaths.length) return { expect: 'refused', fields: unknownPaths };
  if (!isObject(spec)) return { expect: 'refused', fields: ['spec'] };
  const s = spec;

  // upstreamPort
  if (!present(s.upstreamPort) || !isPort(s.upstreamPort)) refused.push('spec.upstreamPort');
  // The sidecar's admin port is the controller's to refuse (test/controller/issuance.test.ts relies on it).
  else if (s.upstreamPort === SIDECAR_ADMIN_PORT) invalid.push('spec.upstreamPort');

  // listeners
  let listeners: unknown[] = [{ mode: 'strict', port: 8443 }];
  if (present(s.listeners)) {
    if (!Array.isArray(s.listeners)) refused.push('spec.listeners');
    else if (s.listeners.length < 1 || s.listeners.length > 3) refused.push('spec.listeners');
    else {
      listeners = s.listeners;
      s.listeners.forEach((l, i) => {
        if (!isObject(l)) return refused.push(`spec.listeners[${i}]`);
        if (!present(l.mode) || !MODES.includes(l.mode as string)) refused.push(`spec.listeners[${i}].mode`);
        if (!present(l.port) || !isPort(l.port)) refused.push(`spec.listeners[${i}].port`);
        else if (l.port === SIDECAR_ADMIN_PORT) invalid.push(`spec.listeners[${i}].port`);
      });
      const ports = s.listeners.map((l) => (isObject(l) ? l.port : undefined));
      const modes = s.listeners.map((l) => (isObject(l) ? l.mode : undefined));
      if (new Set(ports).size !== ports.length) refused.push('spec.listeners');
      if (new Set(modes).size !== modes.length) refused.push('spec.listeners');
    }
  }
  if (isPort(s.upstreamPort) && listeners.some((l) => isObject(l) && l.port === s.upstreamPort))
    refused.push('spec.upstreamPort');

  // dnsNames
  if (present(s.dnsNames)) {
    const names: unknown = s.dnsNames;
    if (!Array.isArray(names) || names.length > 100) refused.push('spec.dnsNames');
    else {
      names.forEach((n, i) => {
        if (typeof n !== 'string' || chars(n) > 253 || !DNS_NAME.test(n)) refused.push(`spec.dnsNames[${i}]`);
        else if (names.indexOf(n) !== i) refused.push(`spec.dnsNames[${i}]`);
      });
    }
  }

  // certificates (the API server fills in the defaults before it validates)
  if (present(s.certificates)) {
    if (!isObject(s.certificates)) refused.push('spec.certificates');
    else {
      const c = s.certificates;
      const read = (field: string, fallback: string | undefined, empty = false) => {
        if (!present(c[field])) return fallback === undefined ? undefined : parseDuration(fallback);
        if (empty && c[field] === '') return undefined;
        const ms = durationMs(c[field]);
        if (ms === undefined || ms === 'overflow') {
          refused.push(`spec.certificates.${field}`);
          return null;
        }
        return ms;
      };
      const validity = read('validity', '8760h');
      const caValidity = read('caValidity', '43800h');
      const renewBefore = read('renewBefore', undefined, true);
      if (typeof validity === 'number') {
        if (validity < 10_000) refused.push('spec.certificates.validity');
        if (typeof caValidity === 'number' && validity >= caValidity) refused.push('spec.certificates.validity');
        if (typeof renewBefore === 'number' && (renewBefore <= 0 || renewBefore >= validity))
          refused.push('spec.certificates.renewBefore');
      }
      if (typeof renewBefore === 'number' && renewBefore <= 0) refused.push('spec.certificates.renewBefore');
      if (present(c.keyAlgorithm) && !KEY_ALGORITHMS.includes(c.keyAlgorithm as string))
        refused.push('spec.certificates.keyAlgorithm');
      if (typeof caValidity === 'number' && caValidity < MIN_CA_VALIDITY_MS)
        invalid.push('spec.certificates.caValidity');
    }
  }

  // clients
  const clientNames: unknown[] = [];
  if (present(s.clients)) {
    if (!Array.isArray(s.clients) || s.clients.length > 100) refused.push('spec.clients');
    else {
      s.clients.forEach((c, i) => {
        if (!isObject(c)) return refused.push(`spec.clients[${i}]`);
        clientNames.push(c.name);
        if (typeof c.name !== 'string' || chars(c.name) < 1 || chars(c.name) > 63 || !DNS_LABEL.test(c.name))
          refused.push(`spec.clients[${i}].name`);
      });
      if (new Set(clientNames).size !== clientNames.length) refused.push('spec.clients');
    }
  }

  // allowedClients
  if (present(s.allowedClients)) {
    const allowed: unknown = s.allowedClients;
    if (!Array.isArray(allowed) || allowed.length > 100) refused.push('spec.allowedClients');
    else {
      allowed.forEach((a, i) => {
        if (typeof a !== 'string' || chars(a) > 63 || !DNS_LABEL.test(a)) refused.push(`spec.allowedClients[${i}]`);
        else if (allowed.indexOf(a) !== i) refused.push(`spec.allowedClients[${i}]`);
        else if (!clientNames.includes(a)) refused.push('spec.allowedClients');
      });
    }
  }

  // podSelector
  if (present(s.podSelector)) {
    const p = s.podSelector;
    if (!isObject(p)) refused.push('spec.podSelector');
    else {
      const ml = p.matchLabels;
      const me = p.matchExpressions;
      if (present(ml)) {
        if (!isObject(ml) || Object.keys(ml).length > 64) refused.push('spec.podSelector.matchLabels');
        else
          for (const [k, v] of Object.entries(ml)) {
            if (!labelKeyValid(k)) refused.push('spec.podSelector.matchLabels');
            if (typeof v !== 'string' || chars(v) > 63 || !LABEL_VALUE.test(v))
              refused.push('spec.podSelector.matchLabels');
          }
      }
      if (present(me)) {
        if (!Array.isArray(me) || me.length > 20) refused.push('spec.podSelector.matchExpressions');
        else
          me.forEach((e, i) => {
            const at = `spec.podSelector.matchExpressions[${i}]`;
            if (!isObject(e) || typeof e.key !== 'string' || !labelKeyValid(e.key)) return refused.push(at);
            if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(e.operator as string)) return refused.push(at);
            const values = e.values;
            if (present(values) && (!Array.isArray(values) || values.some((v) => typeof v !== 'string')))
              return refused.push(at);
            const n = Array.isArray(values) ? values.length : 0;
            if (['In', 'NotIn'].includes(e.operator as string) ? n === 0 : n > 0) refused.push(at);
          });
      }
      const selects = (isObject(ml) && Object.keys(ml).length > 0) || (Array.isArray(me) && me.length > 0);
      if (!selects) refused.push('spec.podSelector');
    }
  }

  if (refused.length) return { expect: 'refused', fields: [...new Set(refused)] };
  if (invalid.length) return { expect: 'invalid', fields: invalid };
  return { expect: 'valid', fields: [] };
}

// ---- the corpus ---------------------------------------------------------------------------------------------

const ODD_CHARS = ['ä', '名', '😀', '\u200b', '\u202e', 'ı', 'K', '\u0000', ' ', '\n', 'Ａ', '_', '.', '/', '*', 'A'];

function generator(seed: number) {
  const rnd = prng(seed);
  const label = (min = 1, max = 12) => {
    const n = rnd.int(min, max);
    let out = '';
    for (let i = 0; i < n; i++) {
      const edge = i === 0 || i === n - 1;
      out += rnd.pick([...(edge ? 'abcdefghijklmnopqrstuvwxyz0123456789' : 'abcdefghijklmnopqrstuvwxyz0123456789-')]);
    }
    return out;
  };
  /** A name that is a DNS label about half the time, else broken in one of many ways. */
  const oddName = (): string => {
    const base = label();
    switch (rnd.int(0, 11)) {
      case 0:
        return label(64, 80);
      case 1:
        return base.toUpperCase() + 'X';
      case 2: {
        const at = rnd.int(0, base.length);
        return base.slice(0, at) + rnd.pick(ODD_CHARS) + base.slice(at);
      }
      case 3:
        return rnd.pick(['-', '']) + base + rnd.pick(['-', '.']);
      case 4:
        return rnd.pick(['', ' ', '\t', '0', '-']);
      case 5:
        return label(63, 63);
      default:
        return base;
    }
  };
  const oddDnsName = (): string => {
    const labels = Array.from({ length: rnd.int(1, 4) }, () => (rnd.next() < 0.8 ? label(1, 20) : oddName()));
    let name = labels.join('.');
    if (rnd.next() < 0.15) name = `*.${name}`;
    if (rnd.next() < 0.05) name = `${name}.`;
    if (rnd.next() < 0.05) name = `${label(64, 70)}.test`;
    if (rnd.next() < 0.03) name = 'x'.repeat(rnd.int(254, 400));
    return name;
  };
  const oddPort = (): unknown =>
    rnd.pick<() => unknown>([
      () => rnd.int(1, 65535),
      () => rnd.int(1, 65535),
      () => rnd.int(1, 65535),
      () => rnd.pick([1, 65535, SIDECAR_ADMIN_PORT]),
      () => rnd.int(-100_000, 0),
      () => rnd.int(65_536, 2 ** 31),
      () => String(rnd.int(1, 65535)),
      () => rnd.int(1, 65534) + 0.5,
      () => rnd.pick([true, [8080], { port: 8080 }, 1e20]),
    ])();
  const oddDuration = (): unknown => {
    if (rnd.next() < 0.1) return rnd.pick([3600, true, ['1h'], '']);
    const tokens = Array.from({ length: rnd.int(1, 3) }, () => {
      const n = rnd.pick([
        '0',
        '1',
        '2',
        '10',
        '20',
        '90',
        '1.5',
        '30',
        '720',
        '8760',
        '2562048',
        '99999999999',
        '007',
      ]);
      const unit = rnd.pick(['h', 'h', 'm', 's', 'ms', 'us', 'µs', 'ns', 'd', 'y', 'H', 'μs', '']);
      return n + unit;
    });
    return rnd.pick(['', '', '', '', '-', '+', ' ']) + tokens.join('');
  };
  const list = <T>(item: () => T): T[] => {
    const n = rnd.pick([0, 1, 1, 2, 2, 3, 4, rnd.int(5, 20), 101, 10_000]);
    return Array.from({ length: n }, item);
  };

  type Spec = Record<string, unknown>;
  const unknownPaths: string[] = [];
  const axes: ((s: Spec) => void)[] = [
    (s) => {
      s.upstreamPort = rnd.next() < 0.1 ? undefined : oddPort();
    },
    (s) => {
      if (rnd.next() < 0.1) return void (s.listeners = rnd.pick([[], {}, 'strict', null]));
      const n = rnd.pick([1, 1, 2, 3, 3, 4, 10_000]);
      const modes = [...MODES].sort(() => rnd.next() - 0.5);
      s.listeners = Array.from({ length: n }, (_, i) => ({
        mode: rnd.next() < 0.8 ? modes[i % 3] : rnd.pick(['STRICT', 'Strict', 'mtls', '', 'strïct', 'strict ', 1]),
        port: rnd.next() < 0.8 ? 9000 + i + rnd.int(0, 3) * 10 : oddPort(),
      }));
    },
    (s) => {
      s.dnsNames = list(oddDnsName);
      if (rnd.next() < 0.1 && (s.dnsNames as string[]).length)
        (s.dnsNames as string[]).push((s.dnsNames as string[])[0]!);
    },
    (s) => {
      const clients = list(oddName).map((name) => (rnd.next() < 0.05 ? rnd.pick([name, 7, null]) : { name }));
      s.clients = rnd.next() < 0.05 ? 'billing' : clients;
      if (rnd.next() < 0.3 && Array.isArray(s.allowedClients) === false) {
        const names = clients.flatMap((c) => (isObject(c) && typeof c.name === 'string' ? [c.name] : []));
        s.allowedClients = rnd.next() < 0.7 ? names.slice(0, 2) : [...names.slice(0, 1), rnd.pick(['ghost', 'BAD'])];
      }
    },
    (s) => {
      const c: Spec = {};
      if (rnd.next() < 0.7) c.validity = oddDuration();
      if (rnd.next() < 0.4) c.renewBefore = oddDuration();
      if (rnd.next() < 0.5) c.caValidity = oddDuration();
      if (rnd.next() < 0.4)
        c.keyAlgorithm = rnd.pick([
          'ECDSA-P256',
          'ECDSA-P384',
          'RSA-2048',
          'RSA-1024',
          'ecdsa-p256',
          'Ed25519',
          '',
          256,
        ]);
      s.certificates = rnd.next() < 0.05 ? rnd.pick(['8760h', [], 1]) : c;
    },
    (s) => {
      const matchLabels: Record<string, unknown> = {};
      for (let i = rnd.int(0, 3); i > 0; i--)
        matchLabels[rnd.next() < 0.7 ? label() : rnd.pick([oddName(), `example.com/${label()}`, `${oddName()}/x`])] =
          rnd.next() < 0.8 ? label() : rnd.pick([oddName(), 1, 'x'.repeat(64)]);
      s.podSelector = rnd.pick<unknown>([
        { matchLabels },
        { matchLabels },
        { matchExpressions: [{ key: label(), operator: rnd.pick(['In', 'Exists', 'Foo']), values: [label()] }] },
        {},
        [],
      ]);
    },
    (s) => {
      const name = rnd.pick(['foo', 'tls', 'replicas', 'upstreamport', 'x-y']);
      const where = rnd.int(0, 2);
      if (where === 0) {
        s[name] = rnd.pick([1, 'x', { a: 1 }]);
        unknownPaths.push(`spec.${name}`);
      } else if (where === 1) {
        s.listeners = [{ mode: 'strict', port: 8443, [name]: true }];
        unknownPaths.push(`spec.listeners[0].${name}`);
      } else {
        s.certificates = { ...(isObject(s.certificates) ? s.certificates : {}), [name]: '1h' };
        unknownPaths.push(`spec.certificates.${name}`);
      }
    },
  ];

  const cases: Case[] = [];
  for (let i = 0; i < 130; i++) {
    unknownPaths.length = 0;
    const spec: Spec = {
      upstreamPort: 8080,
      podSelector: { matchLabels: { app: 'mock' } },
      clients: [{ name: 'app' }],
    };
    const chosen = new Set<number>();
    for (let k = rnd.int(1, 3); k > 0; k--) chosen.add(rnd.int(0, axes.length - 1));
    for (const axis of [...chosen].sort()) axes[axis]!(spec);
    // With an unknown field, sometimes ask the API server to refuse it (fieldValidation=Strict) instead of dropping it.
    const strict = unknownPaths.length > 0 && rnd.next() < 0.4;
    const { expect, fields } = oracle(spec, strict, [...unknownPaths]);
    cases.push({
      what: `generated #${i} (axes ${[...chosen].join(',')})`,
      name: `g${String(i).padStart(3, '0')}`,
      spec,
      strict,
      expect,
      fields,
      pruned: strict ? undefined : [...unknownPaths],
    });
  }
  return cases;
}

/** Cases picked by hand: the edges of every documented rule, and what the schema cannot see. */
function handPicked(): Case[] {
  const base = { upstreamPort: 8080, podSelector: { matchLabels: { app: 'mock' } } };
  const cases: Case[] = [];
  const add = (what: string, spec: unknown, extra: Partial<Case> = {}) => {
    const computed =
      spec === NO_SPEC ? { expect: 'refused' as Outcome, fields: ['spec'] } : oracle(spec, !!extra.strict, []);
    cases.push({ what, name: `h${String(cases.length).padStart(3, '0')}`, spec, ...computed, ...extra });
  };
  const cert = (certificates: Record<string, unknown>) => ({ ...base, certificates });
  const many = (n: number, f: (i: number) => unknown) => Array.from({ length: n }, (_, i) => f(i));

  add('no spec at all', NO_SPEC);
  add('spec is a list', []);
  add('spec is a string', 'upstreamPort: 8080');
  add('spec is empty', {});
  add('upstreamPort as a string', { ...base, upstreamPort: '8080' });
  add('upstreamPort 0', { ...base, upstreamPort: 0 });
  add('upstreamPort 65536', { ...base, upstreamPort: 65536 });
  add('upstreamPort -1', { ...base, upstreamPort: -1 });
  add('upstreamPort 8080.5', { ...base, upstreamPort: 8080.5 });
  add('upstreamPort true', { ...base, upstreamPort: true });
  add('upstreamPort 1e20', { ...base, upstreamPort: 1e20 });
  add('upstreamPort equal to the default listener', { ...base, upstreamPort: 8443 });
  add('upstreamPort equal to a listener', { ...base, listeners: [{ mode: 'flexible', port: 8080 }] });
  add("upstreamPort on the sidecar's admin port", { ...base, upstreamPort: SIDECAR_ADMIN_PORT });
  add("a listener on the sidecar's admin port", { ...base, listeners: [{ mode: 'strict', port: SIDECAR_ADMIN_PORT }] });
  add('no listeners', { ...base, listeners: [] });
  add('four listeners', { ...base, listeners: many(4, (i) => ({ mode: MODES[i % 3], port: 9000 + i })) });
  add('10,000 listeners', { ...base, listeners: many(10_000, (i) => ({ mode: 'strict', port: (i % 60_000) + 1 })) });
  add('mode STRICT', { ...base, listeners: [{ mode: 'STRICT', port: 8443 }] });
  add('mode empty', { ...base, listeners: [{ mode: '', port: 8443 }] });
  add('mode with a unicode letter', { ...base, listeners: [{ mode: 'strіct', port: 8443 }] });
  add('two listeners on one port', {
    ...base,
    listeners: [
      { mode: 'strict', port: 8443 },
      { mode: 'flexible', port: 8443 },
    ],
  });
  add('one mode twice', {
    ...base,
    listeners: [
      { mode: 'strict', port: 8443 },
      { mode: 'strict', port: 9443 },
    ],
  });
  add('a listener without a port', { ...base, listeners: [{ mode: 'strict' }] });
  add('listeners as an object', { ...base, listeners: { strict: 8443 } });
  add('10,000 clients', { ...base, clients: many(10_000, (i) => ({ name: `c${i}` })) });
  add('101 clients', { ...base, clients: many(101, (i) => ({ name: `c${i}` })) });
  add('one client twice', { ...base, clients: [{ name: 'a' }, { name: 'a' }] });
  add('a client with an empty name', { ...base, clients: [{ name: '' }] });
  add('a client in upper case', { ...base, clients: [{ name: 'Billing' }] });
  add('a client with a unicode name', { ...base, clients: [{ name: 'bïlling' }] });
  add('a client name of 64 characters', { ...base, clients: [{ name: 'c'.repeat(64) }] });
  add('a client name with a dot', { ...base, clients: [{ name: 'team.billing' }] });
  add('clients as a string', { ...base, clients: 'billing' });
  add('a client without a name', { ...base, clients: [{ cn: 'billing' }] });
  add('10,000 dnsNames', { ...base, dnsNames: many(10_000, (i) => `n${i}.test`) });
  add('a dnsName of a million characters', { ...base, dnsNames: ['a'.repeat(1_000_000)] });
  add('a unicode dnsName', { ...base, dnsNames: ['exämple.com'] });
  add('an upper-case dnsName', { ...base, dnsNames: ['Example.com'] });
  add('one dnsName twice', { ...base, dnsNames: ['a.test', 'a.test'] });
  add('a dnsName with a 64-character label', { ...base, dnsNames: [`${'l'.repeat(64)}.test`] });
  add('a dnsName with a trailing dot', { ...base, dnsNames: ['example.com.'] });
  add('a bare wildcard dnsName', { ...base, dnsNames: ['*'] });
  add('validity 1d', cert({ validity: '1d' }));
  add('validity -1h', cert({ validity: '-1h' }));
  add('validity 0s', cert({ validity: '0s' }));
  add('validity 5s', cert({ validity: '5s' }));
  add('validity empty', cert({ validity: '' }));
  add('validity with a space', cert({ validity: '1h 30m' }));
  add('validity in Greek-mu microseconds', cert({ validity: '20000000μs' }));
  add('validity as a number', cert({ validity: 3600 }));
  add('renewBefore equal to validity', cert({ validity: '24h', renewBefore: '24h' }));
  add('renewBefore longer than validity', cert({ validity: '1h', renewBefore: '2h' }));
  add('renewBefore longer than the default validity', cert({ renewBefore: '9000h' }));
  add('renewBefore 0s', cert({ renewBefore: '0s' }));
  add('caValidity equal to validity', cert({ validity: '24h', caValidity: '24h' }));
  add('caValidity shorter than the default validity', cert({ caValidity: '1h' }));
  add('validity just past the longest Go duration', cert({ validity: '2562048h', caValidity: '2562049h' }));
  add('caValidity far past the longest Go duration', cert({ caValidity: '99999999999h' }));
  add('keyAlgorithm RSA-1024', cert({ keyAlgorithm: 'RSA-1024' }));
  add('keyAlgorithm in lower case', cert({ keyAlgorithm: 'ecdsa-p256' }));
  add('keyAlgorithm as a number', cert({ keyAlgorithm: 256 }));
  add('certificates as a string', { ...base, certificates: '8760h' });
  add('allowedClients naming an unknown client', { ...base, clients: [{ name: 'a' }], allowedClients: ['b'] });
  add('allowedClients without clients', { ...base, allowedClients: ['a'] });
  add('allowedClients with a name twice', { ...base, clients: [{ name: 'a' }], allowedClients: ['a', 'a'] });
  add('an empty podSelector', { ...base, podSelector: {} });
  add('empty matchLabels', { ...base, podSelector: { matchLabels: {} } });
  add('a label value with a space', { ...base, podSelector: { matchLabels: { app: 'my mock' } } });
  add('a label key with a space', { ...base, podSelector: { matchLabels: { 'my app': 'mock' } } });
  add('a unicode label key', { ...base, podSelector: { matchLabels: { äpp: 'mock' } } });
  add('a label key with an empty prefix', { ...base, podSelector: { matchLabels: { '/app': 'mock' } } });
  add('a label key of 64 characters', { ...base, podSelector: { matchLabels: { ['k'.repeat(64)]: 'mock' } } });
  add('a matchExpressions key with a space', {
    ...base,
    podSelector: { matchExpressions: [{ key: 'my app', operator: 'Exists' }] },
  });
  add('a matchExpressions operator Foo', {
    ...base,
    podSelector: { matchExpressions: [{ key: 'app', operator: 'Foo' }] },
  });
  add('In without values', { ...base, podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] } });
  add('matchLabels as a list', { ...base, podSelector: { matchLabels: ['app=mock'] } });
  add('an unknown field, strict', { ...base, foo: 1 }, { strict: true, expect: 'refused', fields: ['spec.foo'] });
  add(
    'an unknown listener field, strict',
    { ...base, listeners: [{ mode: 'strict', port: 8443, tls: true }] },
    { strict: true, expect: 'refused', fields: ['spec.listeners[0].tls'] },
  );
  // metadata.name: the CRD's own rule and the API server's
  const named = (what: string, name: string, fields = ['metadata.name']) =>
    cases.push({ what, name, spec: { upstreamPort: 8080 }, expect: 'refused', fields });
  named('a name of 55 characters', `n${'a'.repeat(54)}`);
  named('an upper-case name', 'Payments');
  named('a name with a dot', 'pay.ments');
  named('a unicode name', 'päyments');
  named('a name starting with a digit', '1payments');
  named('a name of a million characters', 'a'.repeat(1_000_000));
  cases.push({
    what: 'no name at all',
    name: '',
    metadata: {},
    spec: { upstreamPort: 8080 },
    expect: 'refused',
    fields: ['metadata.name'],
  });

  // Accepted: valid at the edges
  add('the minimal spec', { upstreamPort: 8080 });
  add('unknown fields are dropped', {
    ...base,
    foo: 1,
    listeners: [{ mode: 'strict', port: 8443, tls: true }],
    certificates: { bar: '1h' },
  });
  cases[cases.length - 1]!.pruned = ['spec.foo', 'spec.listeners[0].tls', 'spec.certificates.bar'];
  cases.push({
    what: 'a 54-character name, a 63-character client and all three listeners',
    name: `l${'o'.repeat(52)}g`,
    spec: {
      ...base,
      listeners: MODES.map((mode, i) => ({ mode, port: 8443 + i * 1000 })),
      clients: [{ name: `c${'x'.repeat(61)}c` }],
    },
    expect: 'valid',
    fields: [],
  });
  add('100 clients, all allowed', {
    ...base,
    clients: many(100, (i) => ({ name: `client-${i}` })),
    allowedClients: many(100, (i) => `client-${i}`),
  });
  add('100 dnsNames', { ...base, dnsNames: many(100, (i) => `name-${i}.example.test`) });
  add('a dnsName of 253 characters', {
    ...base,
    dnsNames: [[...many(3, () => 'd'.repeat(63)), 'd'.repeat(61)].join('.')],
  });
  add('punycode, wildcard and numeric dnsNames', {
    ...base,
    dnsNames: ['xn--exmple-cua.com', '*.mock.example.test', '10.0.0.1'],
  });
  add('ports 1 and 65535', {
    ...base,
    upstreamPort: 1,
    listeners: [
      { mode: 'strict', port: 65535 },
      { mode: 'standard', port: 2 },
    ],
  });
  add('null listeners and certificates take the defaults', { ...base, listeners: null, certificates: null });
  add('fractional and mixed durations', cert({ validity: '1.5h', renewBefore: '20m30s', caValidity: '10000h' }));
  add('validity in microseconds', cert({ validity: '30000000µs' }));
  add('the shortest validity, renewed by the default rule', cert({ validity: '10s' }));
  add('validity 29s, renewed by the default rule', cert({ validity: '29s' }));
  add('caValidity of 228 years', cert({ caValidity: '2000000h' }));
  add('caValidity exactly four propagation delays', cert({ validity: '1m', caValidity: '20m' }));
  add('P-384 keys', cert({ keyAlgorithm: 'ECDSA-P384' }));
  add('matchExpressions only: no Services', {
    ...base,
    podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['mock'] }] },
  });
  add('a label key with a prefix', { ...base, podSelector: { matchLabels: { 'example.com/app': 'mock' } } });
  const forged = {
    conditions: [
      {
        type: 'Ready',
        status: 'True',
        reason: 'Forged',
        message: 'set by the user',
        lastTransitionTime: '2020-01-01T00:00:00Z',
      },
    ],
  };
  add('a forged Ready=True status on create', { ...base }, { extra: { status: forged } });
  cases.push({
    what: 'a generated name',
    name: '',
    metadata: { generateName: 'gen-' },
    spec: { upstreamPort: 8080 },
    expect: 'valid',
    fields: [],
  });

  // Accepted, but the controller cannot act on them: Ready=False with a reason
  add('caValidity 11s: no CA rollover fits', cert({ validity: '10s', caValidity: '11s' }));
  add('caValidity just under four propagation delays', cert({ validity: '1m', caValidity: '19m59s' }));
  add('caValidity 10m1s with a forged Ready=True status', cert({ validity: '10m', caValidity: '10m1s' }), {
    extra: { status: forged },
  });
  return cases;
}

// ---- helpers ------------------------------------------------------------------------------------------------

interface Tried {
  c: Case;
  name?: string;
  refusal?: { code: number; message: string };
  outcome?: Outcome;
  problems: string[];
}

function apiError(err: unknown): { code: number; message: string } | undefined {
  if (!(err instanceof k8s.ApiException)) return undefined;
  let body: unknown = err.body;
  try {
    if (typeof body === 'string') body = JSON.parse(body);
  } catch {
    // not JSON
  }
  const message = isObject(body) && typeof body.message === 'string' ? body.message : String(err.body);
  return { code: err.code, message };
}

/** The lifetime (ms) of the shortest-lived certificate an accepted spec asks for. */
function shortestLifetime(ep: MtlsEndpoint): number {
  const c = ep.spec.certificates ?? {};
  return Math.min(parseDuration(c.validity ?? '8760h'), parseDuration(c.caValidity ?? '43800h'));
}

function parseLines(output: string[]): { json: Record<string, unknown>[]; other: string[] } {
  const json: Record<string, unknown>[] = [];
  const other: string[] = [];
  for (const line of output.join('').split('\n')) {
    if (!line.trim()) continue;
    try {
      json.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      other.push(line);
    }
  }
  return { json, other };
}

async function pool<T>(items: T[], size: number, f: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: size }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await f(item);
    }),
  );
}

// ---- the suite ----------------------------------------------------------------------------------------------

describe('reliability: bad input', () => {
  let namespace: string;
  let op: OperatorProcess;
  const output: string[] = [];
  /** Every private key seen in the namespace during the run, and every error text the tests were given. */
  const keysSeen = new Set<string>();
  const errorTexts: string[] = [];
  const kc = kubeConfig();
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);

  const managedSecrets = async () => {
    const items = (await core.listNamespacedSecret({ namespace, labelSelector: MANAGED })).items;
    for (const s of items)
      for (const [k, v] of Object.entries(s.data ?? {}))
        if (k.endsWith('.key')) keysSeen.add(Buffer.from(v, 'base64').toString('utf8'));
    return items;
  };
  const endpoints = async () =>
    ((await custom.listNamespacedCustomObject({ group, version, plural, namespace })) as { items: MtlsEndpoint[] })
      .items;

  /**
   * status.server names the server Secret's certificate. The two are read one after the other, and a 10 s leaf
   * can rotate between the reads (the Secret is written before the status): on a mismatch both are read again, a
   * bounded number of times, and must agree at one of those reads.
   */
  async function serverStatusAgrees(name: string, ep: MtlsEndpoint, serverPem: string): Promise<boolean> {
    let status = ep.status?.server?.serialNumber;
    let secret: string | undefined = serialOf(serverPem);
    for (let attempt = 0; attempt < 10 && status !== secret; attempt++) {
      await sleep(500);
      status = (await endpoints()).find((e) => e.metadata?.name === name)?.status?.server?.serialNumber;
      const pem = b64(
        (await managedSecrets()).find((s) => s.metadata?.name === `${name}-server`),
        'tls.crt',
      );
      secret = pem ? serialOf(pem) : undefined;
    }
    return status === secret;
  }

  beforeAll(async () => {
    await installCrd();
    namespace = await createTestNamespace('rel-bad');
    // The most talkative level: whatever the operator could leak, it would leak here.
    const saved = process.env.MTLS_LOG_LEVEL;
    process.env.MTLS_LOG_LEVEL = 'debug';
    try {
      op = await spawnOperator(
        kubeconfigPath(),
        namespace,
        ['--no-leader-elect', '--ca-propagation-delay', CA_PROPAGATION_DELAY],
        output,
      );
    } finally {
      if (saved === undefined) delete process.env.MTLS_LOG_LEVEL;
      else process.env.MTLS_LOG_LEVEL = saved;
    }
    await waitHealthy(op);
  });

  afterAll(async () => {
    op?.child.kill('SIGKILL');
    await op?.exited;
    await deleteTestNamespace(namespace);
    reportSummary(
      `bad-input: inputs tried ${summary.tried} / handled ${summary.handled} (refused by the API server ${summary.refused},` +
        ` Ready=False ${summary.invalid}, valid ${summary.valid}); Secret corruptions ${summary.corruptions} /` +
        ` repaired ${summary.repaired}; key material found in logs/events/status ${summary.leaks < 0 ? 'not checked' : summary.leaks}`,
    );
  });

  it('a generated corpus of malformed MtlsEndpoints: each refused with a field error, Ready=False with a reason, or valid; no crash, no hot loop', async () => {
    const cases = [...handPicked(), ...generator(SEED)];
    expect(cases.length).toBeGreaterThanOrEqual(150);
    // The corpus must exercise every class, or the oracle (or the generator) has gone blind.
    for (const outcome of ['refused', 'invalid', 'valid'] as const)
      expect(cases.filter((c) => c.expect === outcome).length).toBeGreaterThanOrEqual(outcome === 'invalid' ? 3 : 20);

    const tried: Tried[] = [];
    for (const c of cases) {
      const body: Record<string, unknown> = {
        apiVersion: 'mtls.operator.dev/v1alpha1',
        kind: 'MtlsEndpoint',
        metadata: c.metadata ?? { name: c.name },
        ...(c.spec === NO_SPEC ? {} : { spec: c.spec }),
        ...c.extra,
      };
      const t: Tried = { c, problems: [] };
      tried.push(t);
      summary.tried++;
      try {
        const created = (await custom.createNamespacedCustomObject({
          group,
          version,
          plural,
          namespace,
          body,
          fieldValidation: c.strict ? 'Strict' : undefined,
        })) as MtlsEndpoint;
        t.name = created.metadata!.name!;
      } catch (err) {
        const refusal = apiError(err);
        if (!refusal) throw err;
        t.refusal = refusal;
        t.outcome = 'refused';
        errorTexts.push(refusal.message);
      }
    }

    // Let every accepted endpoint settle: a current status with a Ready condition that is not "in progress".
    const accepted = tried.filter((t) => t.name);
    const settled = (ep: MtlsEndpoint) => {
      const ready = condition(ep, 'Ready');
      return ep.status?.observedGeneration === ep.metadata?.generation && !!ready && ready.reason !== 'Issuing';
    };
    await waitFor(
      `${accepted.length} accepted endpoints to settle`,
      async () => {
        const byName = new Map((await endpoints()).map((ep) => [ep.metadata!.name!, ep]));
        const pending = accepted.filter((t) => !byName.get(t.name!) || !settled(byName.get(t.name!)!));
        if (pending.length) throw new Error(`${pending.length} pending, e.g. ${pending[0]!.name}`);
        return true;
      },
      { timeoutMs: 180_000, intervalMs: 1_000 },
    );

    const stored = new Map((await endpoints()).map((ep) => [ep.metadata!.name!, ep]));
    const readAtMs = Date.now();
    const secrets = await managedSecrets();
    const services = (await core.listNamespacedService({ namespace, labelSelector: MANAGED })).items;
    await pool(accepted, 4, async (t) => {
      const ep = stored.get(t.name!)!;
      const ready = condition(ep, 'Ready')!;
      const mine = secrets.filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === t.name);
      const clients = (ep.spec.clients ?? []).map((c) => c.name);
      errorTexts.push(ready.message);
      for (const path of t.c.pruned ?? []) {
        const [, ...rest] = path.split('.');
        const value = rest.reduce<unknown>((v, key) => {
          const m = /^(\w[\w-]*)(?:\[(\d+)\])?$/.exec(key);
          if (!m || !isObject(v)) return undefined;
          const field = v[m[1]!];
          return m[2] === undefined ? field : Array.isArray(field) ? field[Number(m[2])] : undefined;
        }, ep.spec as unknown);
        if (value !== undefined) t.problems.push(`unknown field ${path} was stored`);
      }
      if (ready.status === 'True') {
        t.outcome = 'valid';
        // Ready=True is a promise: Secrets that verify, hold their keys, and name what the spec asked for.
        t.problems.push(...(await secretProblems(mine, t.name!, clients, readAtMs)));
        const statusClients = (ep.status?.clients ?? []).map((c) => c.name).sort();
        if (JSON.stringify(statusClients) !== JSON.stringify([...clients].sort()))
          t.problems.push(`status.clients ${statusClients.length} != spec.clients ${clients.length}`);
        const server = b64(
          mine.find((s) => s.metadata?.name === `${t.name}-server`),
          'tls.crt',
        );
        if (server) {
          if (!(await serverStatusAgrees(t.name!, ep, server))) t.problems.push('status.server is not the Secret');
          const { sans } = await certNames(server);
          for (const n of ep.spec.dnsNames ?? []) if (!sans.includes(`DNS:${n}`)) t.problems.push(`SAN ${n} missing`);
        }
        for (const client of clients.slice(0, 5)) {
          const crt = b64(
            mine.find((s) => s.metadata?.name === `${t.name}-client-${client}`),
            'tls.crt',
          );
          const subject = crt ? (await certNames(crt)).subject : 'none';
          if (subject !== `CN=${client}`) t.problems.push(`client ${client}'s certificate has subject ${subject}`);
        }
        const expectServices = ep.spec.podSelector?.matchExpressions?.length ? 0 : (ep.spec.listeners ?? []).length;
        const svcCount = services.filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === t.name).length;
        if (svcCount !== expectServices) t.problems.push(`${svcCount} Services, expected ${expectServices}`);
      } else {
        t.outcome = 'invalid';
        if (!ready.reason || !ready.message) t.problems.push('Ready=False without a reason and a message');
        if (t.c.expect === 'invalid' && !t.c.fields.some((f) => ready.message.includes(f)))
          t.problems.push(`Ready=False message does not name ${t.c.fields.join(' or ')}: ${ready.message}`);
        // Whatever exists for a spec the controller refused must not be broken either.
        if (mine.length) t.problems.push(...(await secretProblems(mine, t.name!, clients, readAtMs)));
      }
    });

    const mismatches: string[] = [];
    for (const t of tried) {
      const got = t.outcome ?? 'unsettled';
      const where = `${t.c.what} [${t.name ?? t.c.name.slice(0, 60)}]`;
      if (got !== t.c.expect) {
        const detail = t.refusal
          ? `HTTP ${t.refusal.code}: ${t.refusal.message.slice(0, 300)}`
          : `${condition(stored.get(t.name!)!, 'Ready')?.reason}: ${condition(stored.get(t.name!)!, 'Ready')?.message}`;
        mismatches.push(`${where}: expected ${t.c.expect} (${t.c.fields.join(', ')}), got ${got}: ${detail}`);
        continue;
      }
      if (t.refusal) {
        // A field error: 422 (400 for a strict unknown field), naming the field a person has to fix.
        const codeOk = t.refusal.code === 422 || (t.c.strict && t.refusal.code === 400);
        if (!codeOk) mismatches.push(`${where}: HTTP ${t.refusal.code}, not a field error: ${t.refusal.message}`);
        if (!t.c.fields.some((f) => t.refusal!.message.includes(f)))
          mismatches.push(`${where}: the refusal does not name ${t.c.fields.join(' or ')}: ${t.refusal.message}`);
        if (/type conversion error/.test(t.refusal.message) && !/at most|longest/.test(t.refusal.message))
          mismatches.push(`${where}: an unhelpful refusal: ${t.refusal.message}`);
      }
      for (const p of t.problems) mismatches.push(`${where}: ${p}`);
      if (!t.problems.length) summary.handled++;
      if (got === 'refused') summary.refused++;
      else if (got === 'invalid') summary.invalid++;
      else summary.valid++;
    }

    // No hot loop: over a few quiet seconds the operator writes only what certificate lifetimes demand. A
    // certificate living L is renewed every 2L/3 and its CA rolls over, so an endpoint whose shortest lifetime
    // is under an hour may write a few times per L/3; everything else must be silent.
    const eps = await endpoints();
    const owner = (objectName: string) =>
      eps
        .map((ep) => ep.metadata!.name!)
        .filter((n) => objectName === n || objectName.startsWith(`${n}-`))
        .sort((a, b) => b.length - a.length)[0];
    const eventCounts = async () => {
      const counts = new Map<string, number>();
      for (const e of (await core.listNamespacedEvent({ namespace })).items) {
        const n = e.involvedObject.name ?? '';
        counts.set(n, (counts.get(n) ?? 0) + (e.count ?? 1));
      }
      return counts;
    };
    await sleep(2_000);
    const WINDOW_MS = 6_000;
    const writesBefore = parseLines(output).json.filter((l) => l.message === 'write').length;
    const eventsBefore = await eventCounts();
    await sleep(WINDOW_MS);
    const windowWrites = parseLines(output)
      .json.filter((l) => l.message === 'write')
      .slice(writesBefore);
    const eventsAfter = await eventCounts();
    const perEndpoint = new Map<string, number>();
    for (const w of windowWrites) {
      const n = owner(String(w.name)) ?? String(w.name);
      perEndpoint.set(n, (perEndpoint.get(n) ?? 0) + 1);
    }
    for (const [n, count] of eventsAfter) {
      const grew = count - (eventsBefore.get(n) ?? 0);
      if (grew > 0) perEndpoint.set(n, (perEndpoint.get(n) ?? 0) + grew);
    }
    const loud: string[] = [];
    for (const [n, count] of perEndpoint) {
      const ep = eps.find((e) => e.metadata!.name === n);
      const lifetime = ep ? shortestLifetime(ep) : 0;
      const leaves = (ep?.spec.clients?.length ?? 0) + 2;
      const allowance = lifetime >= 3_600_000 ? 0 : (leaves + 3) * (Math.ceil(WINDOW_MS / (lifetime / 3)) + 1);
      if (count > allowance) loud.push(`${n}: ${count} writes and events in ${WINDOW_MS} ms (allowed ${allowance})`);
    }
    expect({ mismatches, loud }).toEqual({ mismatches: [], loud: [] });
    // No crash: the process runs, every line it wrote is a JSON log line (a stack trace is not), none an error.
    expect(op.child.exitCode).toBeNull();
    const lines = parseLines(output);
    expect(lines.other).toEqual([]);
    expect(lines.json.filter((l) => l.level === 'error')).toEqual([]);
  }, 420_000);

  it('garbage in managed Secrets is repaired, with an Event that says what was found', async () => {
    const name = 'garbage';
    const clients = ['a', 'b'];
    await custom.createNamespacedCustomObject({
      group,
      version,
      plural,
      namespace,
      body: {
        apiVersion: 'mtls.operator.dev/v1alpha1',
        kind: 'MtlsEndpoint',
        metadata: { name },
        spec: {
          upstreamPort: 8080,
          podSelector: { matchLabels: { app: 'g' } },
          clients: clients.map((c) => ({ name: c })),
        },
      },
    });
    const read = (secret: string) => core.readNamespacedSecret({ namespace, name: secret });
    const healthy = async (): Promise<string[]> => {
      const ep = (await custom.getNamespacedCustomObject({ group, version, plural, namespace, name })) as MtlsEndpoint;
      const secrets = (await managedSecrets()).filter((s) => s.metadata?.labels?.[ENDPOINT_LABEL] === name);
      const problems = await secretProblems(secrets, name, clients);
      const ready = condition(ep, 'Ready');
      if (ready?.status !== 'True') problems.push(`Ready=${ready?.status}: ${ready?.message}`);
      for (const s of secrets) {
        const want = s.metadata!.name === `${name}-ca` ? 'Opaque' : 'kubernetes.io/tls';
        if (s.type !== want) problems.push(`${s.metadata!.name} has type ${s.type}`);
      }
      if (
        !b64(
          secrets.find((s) => s.metadata!.name === `${name}-server`),
          'ca.crl',
        )?.includes('BEGIN X509 CRL')
      )
        problems.push('the server Secret has no CRL');
      for (const client of clients) {
        const crt = b64(
          secrets.find((s) => s.metadata!.name === `${name}-client-${client}`),
          'tls.crt',
        );
        const names = crt ? await certNames(crt) : undefined;
        if (names?.subject !== `CN=${client}` || !names.sans.includes(`/client/${client}`))
          problems.push(`${name}-client-${client} holds the certificate of ${names?.subject}`);
      }
      return problems;
    };
    await waitFor('the endpoint to be Ready with valid Secrets', async () => {
      const problems = await healthy();
      if (problems.length) throw new Error(problems.join('; '));
      return true;
    });

    const pem = (secret: k8s.V1Secret, key: string) => b64(secret, key)!;
    const enc = (text: string | Buffer) => Buffer.from(text).toString('base64');
    const rsaKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    }) as string;
    keysSeen.add(rsaKey);
    const expiredCa = await issueCA({
      endpoint: name,
      namespace,
      algorithm: 'ECDSA-P256',
      validityMs: 24 * 3_600_000,
      now: new Date(Date.now() - 3 * 24 * 3_600_000),
    });
    keysSeen.add(expiredCa.keyPem);
    const strangerCa = await issueCA({
      endpoint: 'stranger',
      namespace,
      algorithm: 'ECDSA-P256',
      validityMs: 3_600_000,
      now: new Date(),
    });
    keysSeen.add(strangerCa.keyPem);

    interface Corruption {
      what: string;
      secret: string;
      /** Returns the Secret to write (the current one, changed), or writes by itself and returns what it wrote. */
      apply: (current: k8s.V1Secret) => Promise<k8s.V1Secret | { wrote: k8s.V1Secret }>;
    }
    const edit = (secret: k8s.V1Secret, data: Record<string, string | undefined>, type?: string): k8s.V1Secret => {
      const next = { ...(secret.data ?? {}) };
      for (const [k, v] of Object.entries(data)) {
        if (v === undefined) delete next[k];
        else next[k] = v;
      }
      return { ...secret, type: type ?? secret.type, data: next };
    };
    /** Pauses the operator while several writes happen, so it sees them as one change. */
    const paused = async (f: () => Promise<void>) => {
      op.child.kill('SIGSTOP');
      try {
        await f();
      } finally {
        op.child.kill('SIGCONT');
      }
    };
    const server = `${name}-server`;
    const clientA = `${name}-client-a`;
    const clientB = `${name}-client-b`;
    const caName = `${name}-ca`;
    const corruptions: Corruption[] = [
      {
        what: 'a truncated PEM certificate',
        secret: server,
        apply: async (s) => edit(s, { 'tls.crt': enc(pem(s, 'tls.crt').slice(0, 200)) }),
      },
      {
        what: 'a truncated PEM key',
        secret: clientA,
        apply: async (s) => edit(s, { 'tls.key': enc(pem(s, 'tls.key').slice(0, 120)) }),
      },
      {
        what: 'an RSA key where an ECDSA key belongs',
        secret: clientB,
        apply: async (s) => edit(s, { 'tls.key': enc(rsaKey) }),
      },
      {
        what: "a certificate for another key, signed by the endpoint's own CA",
        secret: server,
        apply: async (s) => {
          const ca = await read(caName);
          const other = await issueServer({
            ca: { certPem: pem(ca, 'ca.crt'), keyPem: pem(ca, 'ca.key') },
            dnsNames: [`${name}-strict`],
            algorithm: 'ECDSA-P256',
            validityMs: 3_600_000,
            now: new Date(),
          });
          keysSeen.add(other.keyPem);
          return edit(s, { 'tls.crt': enc(other.certPem) });
        },
      },
      {
        what: 'an expired CA',
        secret: caName,
        apply: async (s) => edit(s, { 'ca.crt': enc(expiredCa.certPem), 'ca.key': enc(expiredCa.keyPem) }),
      },
      {
        what: 'a CA that is not a CA (the server certificate and key)',
        secret: caName,
        apply: async (s) => {
          const srv = await read(server);
          return edit(s, { 'ca.crt': srv.data!['tls.crt'], 'ca.key': srv.data!['tls.key'] });
        },
      },
      // A kubernetes.io/tls Secret must hold tls.crt and tls.key (the API server says so), but they can be empty.
      { what: 'an empty tls.key', secret: server, apply: async (s) => edit(s, { 'tls.key': '' }) },
      {
        what: 'a missing ca.crt (trust bundle)',
        secret: clientA,
        apply: async (s) => edit(s, { 'ca.crt': undefined }),
      },
      { what: 'a missing ca.key', secret: caName, apply: async (s) => edit(s, { 'ca.key': undefined }) },
      { what: 'empty data', secret: caName, apply: async (s) => ({ ...s, data: {} }) },
      {
        what: 'the wrong Secret type (Opaque)',
        secret: server,
        apply: async (s) => {
          const { metadata } = s;
          const opaque: k8s.V1Secret = {
            metadata: {
              name: server,
              labels: metadata?.labels,
              annotations: metadata?.annotations,
              ownerReferences: metadata?.ownerReferences,
            },
            type: 'Opaque',
            data: s.data,
          };
          await paused(async () => {
            await core.deleteNamespacedSecret({ namespace, name: server });
            await core.createNamespacedSecret({ namespace, body: opaque });
          });
          return { wrote: opaque };
        },
      },
      {
        what: 'binary junk',
        secret: clientB,
        apply: async (s) =>
          edit(s, {
            'tls.crt': enc(randomBytes(700)),
            'tls.key': enc(randomBytes(200)),
            'ca.crt': enc(randomBytes(500)),
          }),
      },
      {
        what: "a client Secret swapped with another client's",
        secret: clientA,
        apply: async (a) => {
          const b = await read(clientB);
          const swapped = { ...a, data: b.data };
          await paused(async () => {
            await core.replaceNamespacedSecret({ namespace, name: clientA, body: swapped });
            await core.replaceNamespacedSecret({ namespace, name: clientB, body: { ...b, data: a.data } });
          });
          return { wrote: swapped };
        },
      },
      {
        what: 'the private key in the certificate field',
        secret: clientA,
        apply: async (s) => edit(s, { 'tls.crt': s.data!['tls.key'] }),
      },
      {
        what: 'a key without its PEM armour',
        secret: server,
        apply: async (s) =>
          edit(s, {
            'tls.key': enc(
              pem(s, 'tls.key')
                .split('\n')
                .filter((l) => !l.startsWith('-----'))
                .join('\n'),
            ),
          }),
      },
      {
        what: "another CA's certificate as the client's trust bundle",
        secret: clientB,
        apply: async (s) => edit(s, { 'ca.crt': enc(strangerCa.certPem) }),
      },
      {
        what: 'a garbage CRL',
        secret: server,
        apply: async (s) => edit(s, { 'ca.crl': enc('-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n') }),
      },
    ];

    const failures: string[] = [];
    for (const corruption of corruptions) {
      summary.corruptions++;
      const current = await read(corruption.secret);
      const before = new Set(
        (await core.listNamespacedEvent({ namespace })).items.map((e) => `${e.metadata!.name}/${e.count ?? 1}`),
      );
      const next = await corruption.apply(current);
      let written: k8s.V1Secret;
      if ('wrote' in next) written = next.wrote;
      else {
        written = next;
        await core.replaceNamespacedSecret({ namespace, name: corruption.secret, body: next });
      }
      try {
        await waitFor(
          `${corruption.what} in ${corruption.secret} to be repaired`,
          async () => {
            const problems = await healthy();
            const now = await read(corruption.secret);
            if (JSON.stringify(now.data) === JSON.stringify(written.data) && now.type === written.type)
              problems.push('the garbage is still there');
            if (problems.length) throw new Error(problems.join('; '));
            return true;
          },
          { timeoutMs: 30_000, intervalMs: 300 },
        );
        const events = await waitFor(
          `an Event about ${corruption.secret}`,
          async () => {
            const fresh = (await core.listNamespacedEvent({ namespace })).items.filter(
              (e) =>
                e.involvedObject.name === name &&
                !before.has(`${e.metadata!.name}/${e.count ?? 1}`) &&
                /Repaired/.test(e.reason ?? '') &&
                (e.message ?? '').includes(corruption.secret),
            );
            return fresh.length ? fresh : undefined;
          },
          { timeoutMs: 10_000, intervalMs: 300 },
        );
        for (const e of events) errorTexts.push(e.message ?? '');
        summary.repaired++;
      } catch (err) {
        failures.push(`${corruption.what} (${corruption.secret}): ${(err as Error).message.slice(0, 600)}`);
        // Put things right for the next corruption, whatever the operator did: start its leaves afresh.
        for (const leaf of [server, clientA, clientB])
          await core.deleteNamespacedSecret({ namespace, name: leaf }).catch(() => undefined);
        await waitFor('the endpoint to recover', async () => !(await healthy()).length, { timeoutMs: 30_000 }).catch(
          () => undefined,
        );
      }
    }
    expect(failures).toEqual([]);
    expect(summary.repaired).toBe(corruptions.length);
    expect(op.child.exitCode).toBeNull();
    expect(parseLines(output).other).toEqual([]);
  }, 420_000);

  it('no private key material in the operator output, Events, endpoint status or error messages', async () => {
    const secrets = await managedSecrets();
    expect(secrets.length).toBeGreaterThan(0);
    const events = (await core.listNamespacedEvent({ namespace })).items;
    const eps = await endpoints();
    const logs = output.join('');
    const haystacks: [string, string][] = [
      ['operator output', logs],
      ['Events', JSON.stringify(events)],
      ['endpoint status', JSON.stringify(eps.map((ep) => ep.status))],
      ['error messages', errorTexts.join('\n')],
    ];
    // There is something to search: debug logs, Events of issuance and repair, statuses, refusals.
    expect(logs.length).toBeGreaterThan(10_000);
    expect(events.length).toBeGreaterThan(10);
    expect(keysSeen.size).toBeGreaterThan(10);
    // The search finds key material where it is (a check of the check, on a copy).
    const sample = [...keysSeen][0]!;
    const body = sample.split('\n').filter((l) => l && !l.startsWith('-----'));
    expect(findKeyMaterial(`x ${body.join('')} y`, [sample]).length).toBeGreaterThan(0);
    expect(
      findKeyMaterial(JSON.stringify({ data: Buffer.from(sample).toString('base64') }), [sample]).length,
    ).toBeGreaterThan(0);

    const found = haystacks.flatMap(([where, text]) =>
      findKeyMaterial(text, keysSeen).map((hit) => `${where}: ${hit}`),
    );
    summary.leaks = found.length;
    expect(found).toEqual([]);
  }, 120_000);
});
