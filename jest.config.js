// Tests run as native ES modules (the Kubernetes client is ESM-only); TypeScript is stripped by Node itself.
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': '<rootDir>/test/support/strip-types-transform.js' },
  testMatch: ['<rootDir>/test/**/*.test.ts', '<rootDir>/operator/**/*.test.ts', '<rootDir>/sidecar/**/*.test.ts'],
  // The real-node tiers: jest.node-lifecycle.config.js and jest.node.config.js (`npm run test:node`).
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/node/', '<rootDir>/test/node-lifecycle/'],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  setupFiles: ['<rootDir>/test/support/quiet-logs.ts'],
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 120_000,
  maxWorkers: 2,
  verbose: true,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};
