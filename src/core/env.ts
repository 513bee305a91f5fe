/**
 * The TIU_* environment variables, in one place: where tests and special setups redirect tiu
 * (run directory, configuration root, no device-mapper, xattr tools) and the test hooks. Read
 * once per command into the context ({@link Context.env}); the few library paths that run
 * without a context read them through {@link readTiuEnv} too. Pure.
 */
export interface TiuEnv {
  /** Locks and image mounts (TIU_RUN_DIR; default /run/tiu). */
  runDir: string;
  /** Where tiu.conf is looked up (TIU_CONFIG_ROOT; default /). */
  configRoot: string | undefined;
  /** Never activate dm-verity (TIU_NO_DM=1). */
  noDm: boolean;
  /** Read and write xattrs with getfattr/setfattr instead of the binding (TIU_XATTR=tools). */
  xattrTools: boolean;
  /** Stands in for /proc/cmdline in the health check (TIU_KERNEL_CMDLINE). */
  kernelCmdline: string | undefined;
  /** The health check prints reboot/isolate instead of running them (TIU_HEALTH_DRY=1). */
  healthDry: boolean;
  /** Test hook: force an internal error at this place (TIU_TEST_INTERNAL_ERROR). */
  testInternalError: string | undefined;
  /** Test hook: the factory reset SIGKILLs itself when this stage starts (TIU_TEST_RESET_KILL_AT). */
  testResetKillAt: string | undefined;
  /** Test hook: pause at this place (TIU_TEST_PAUSE; 'mounted'), so a test can signal tiu there. */
  testPause: string | undefined;
  /** Take the locks (transaction, download, repository cache) with the flock helper instead of the OFD binding (TIU_NO_FD_LOCK=1). */
  noFdLock: boolean;
  /** Start every command with Node's spawn, not through the shell runner (TIU_NO_SHELL_RUNNER=1). */
  noShellRunner: boolean;
}

/** Parses the TIU_* variables of `env`. */
export function readTiuEnv(env: NodeJS.ProcessEnv = process.env): TiuEnv {
  return {
    runDir: env.TIU_RUN_DIR || '/run/tiu',
    configRoot: env.TIU_CONFIG_ROOT || undefined,
    noDm: env.TIU_NO_DM === '1',
    xattrTools: env.TIU_XATTR === 'tools',
    kernelCmdline: env.TIU_KERNEL_CMDLINE,
    healthDry: env.TIU_HEALTH_DRY === '1',
    testInternalError: env.TIU_TEST_INTERNAL_ERROR || undefined,
    testResetKillAt: env.TIU_TEST_RESET_KILL_AT || undefined,
    testPause: env.TIU_TEST_PAUSE || undefined,
    noFdLock: env.TIU_NO_FD_LOCK === '1',
    noShellRunner: env.TIU_NO_SHELL_RUNNER === '1',
  };
}
