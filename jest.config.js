// Tests run as native ES modules (the Kubernetes client is ESM-only); TypeScript is stripped by Node itself.
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: { '^.+\\.ts$': '<rootDir>/test/support/strip-types-transform.js' },
  testMatch: ['<rootDir>/test/**/*.test.ts', '<rootDir>/operator/**/*.test.ts', '<rootDir>/sidecar/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/node/'], // the real-node tier: jest.node.config.js
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  setupFiles: ['<rootDir>/test/support/quiet-logs.ts'],
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 120_000,
  maxWorkers: 2,
  verbose: true,
  reporters: ['default', '<rootDir>/test/support/summary-reporter.js'],
};
