import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// Prints one plain closing line that CI systems read: "jest: N passed, N failed[, N skipped]", preceded by the
// reliability suite's figures ("reliability: faults injected 20 / survived 20", one line per file) when it ran.
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const stateFile = process.env.MTLS_TEST_CONTROL_PLANE_STATE;
    const reliability = stateFile ? join(dirname(stateFile), 'reliability-summary.txt') : undefined;
    if (reliability && existsSync(reliability)) process.stdout.write(`\n${readFileSync(reliability, 'utf8')}`);
    const skipped = results.numPendingTests + results.numTodoTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    process.stdout.write(
      `\njest: ${results.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`,
    );
  }
}
