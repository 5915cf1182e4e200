// `controlplane --node` started, killed and stopped by the test itself: it runs before the real-node tier,
// which keeps one node up for all of its files (only one node can run at a time).
import { integration, run } from './jest.config.js';

export default {
  ...run,
  ...integration,
  displayName: 'node-lifecycle',
  testMatch: ['<rootDir>/test/node-lifecycle/**/*.test.ts'],
  testPathIgnorePatterns: [],
  globalSetup: undefined,
  globalTeardown: undefined,
  maxWorkers: 1,
  testTimeout: 600_000,
};
