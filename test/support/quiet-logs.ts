import { setLogLevel } from '../../operator/log.ts';
import { setLogLevel as setSidecarLogLevel } from '../../sidecar/log.ts';

// In-process operator and sidecar code logs at warn during tests (MTLS_TEST_LOG_LEVEL=info to see all);
// processes the tests spawn keep their own level.
setLogLevel(process.env.MTLS_TEST_LOG_LEVEL ?? 'warn');
setSidecarLogLevel(process.env.MTLS_TEST_LOG_LEVEL ?? 'warn');
