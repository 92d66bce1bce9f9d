/**
 * Root hooks for the shared RGW (test/harness/rgw.ts): a root-level after() that stops it once
 * every test file has run, if any file started it. Every file that calls sharedRgw() imports this
 * module, so the hook is registered exactly once (ES modules evaluate once) however the run is
 * made up: the whole suite, one file, or --grep. The harness also SIGKILLs its daemons at process
 * exit, for runs that end without reaching this hook.
 */
import { stopSharedRgw } from '../harness/rgw.js';

/** Stopping is about 0.3 s; the harness's own SIGKILL fallbacks bound it at about 22 s. */
const stopDeadlineMs = 60_000;

after('stop the shared RGW', async function () {
  this.timeout(stopDeadlineMs);
  await stopSharedRgw();
});
