// Tests run as native ES modules (the Kubernetes client is ESM-only); TypeScript is stripped by Node itself.
// Two tiers, chosen by file name:
// - unit (`*.unit.test.ts`, `npm run test:unit`, first in `npm test`): the rule is that a unit test starts no API
//   server and no process but the openssl CLI, and touches the network on loopback only, so the tier takes seconds.
// - integration (every other `*.test.ts`, `npm run test:jest`): one real kube-apiserver and etcd for the whole run.
// One file or folder of a tier: `npm run test:unit -- test/pki` (the scripts end in `--` because --selectProjects
// takes a list and would read the paths as project names). `jest <a *.unit.test.ts path>` alone works too.
// The real-node tiers: jest.node-lifecycle.config.js and jest.node.config.js (`npm run test:node`).
const ROOTS = ['<rootDir>/test/', '<rootDir>/operator/', '<rootDir>/sidecar/'];

const shared = {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': '<rootDir>/test/support/strip-types-transform.js' },
  setupFiles: ['<rootDir>/test/support/quiet-logs.ts'],
};

export const unit = {
  ...shared,
  displayName: 'unit',
  testMatch: ROOTS.map((root) => `${root}**/*.unit.test.ts`),
  testPathIgnorePatterns: ['/node_modules/'],
};

export const integration = {
  ...shared,
  displayName: 'integration',
  testMatch: ROOTS.map((root) => `${root}**/*.test.ts`),
  testPathIgnorePatterns: [
    '/node_modules/',
    '\\.unit\\.test\\.ts$',
    '<rootDir>/test/node/',
    '<rootDir>/test/node-lifecycle/',
  ],
  // One control plane per run, shared by every integration suite (each uses its own namespace). Jest runs a
  // project's global setup only when it runs a test of that project, so the unit tier never starts it.
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
};

/** Options of the run rather than of a project; every tier prints the closing line CI reads ("jest: N passed, N failed"). */
export const run = {
  // Jest reads the timeout of the run, not of a project; the integration tier needs minutes.
  testTimeout: 120_000,
  maxWorkers: 2,
  verbose: true,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};

export default { ...run, projects: [unit, integration] };
