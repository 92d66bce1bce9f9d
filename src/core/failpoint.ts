/**
 * Named failpoints: places in the code where a test can stop, delay or fail an operation at an
 * exact moment (etcd/raft's gofail, in miniature). In production no hook is set and a failpoint
 * costs one Map lookup. Hooks are set only by tests in the same process.
 *
 * What it keeps true: a failpoint without a hook resolves at once and changes nothing; a hook's
 * rejection propagates to the caller as the failure of the operation it sits in.
 */

export type FailpointHook = () => Promise<void> | void;

const hooks = new Map<string, FailpointHook>();

/** Runs the hook registered under `name`, if any. */
export async function failpoint(name: string): Promise<void> {
  const hook = hooks.get(name);
  if (hook !== undefined) await hook();
}

/** Registers `hook` under `name` (replacing any); returns a function that removes it. */
export function setFailpoint(name: string, hook: FailpointHook): () => void {
  hooks.set(name, hook);
  return () => {
    if (hooks.get(name) === hook) hooks.delete(name);
  };
}
