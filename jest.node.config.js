// The real-node tier: the product installed with Helm on a real single-node cluster (root, Linux). One node
// per run, so these files run one at a time, after the integration tier (`npm run test:node`).
import { integration, run } from './jest.config.js';

export default {
  ...run,
  ...integration,
  displayName: 'node',
  testMatch: ['<rootDir>/test/node/**/*.test.ts'],
  testPathIgnorePatterns: [],
  globalSetup: '<rootDir>/test/node/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/node/support/global-teardown.ts',
  maxWorkers: 1,
  testTimeout: 300_000,
};
