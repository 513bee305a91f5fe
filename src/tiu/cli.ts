/**
 * The command-line interface: declares commands and options only; each command's code is
 * loaded lazily from src/tiu/commands/. All errors are mapped to exit codes here, in one place.
 */
import { Command, CommanderError, Option } from 'commander';
import { TiuError, toTiuError } from '../core/errors.ts';
import { errorJson, errorLine, fromCommanderError } from './cli-errors.ts';
import { createLogger, writeStderr, type LogLevel } from '../core/log.ts';
import { createSystem } from '../core/system.ts';
import { loadConfig } from './config.ts';
import type { Context } from './context.ts';
import { TIU_VERSION } from './version.ts';
import { installGuard, internalErrorLine, testHook } from './guard.ts';
import { readTiuEnv } from '../core/env.ts';

interface GlobalOptions {
  debug?: boolean;
  quiet?: boolean;
  config?: string;
}

interface State {
  ctx?: Context;
  globals: GlobalOptions;
}

/** The global options (handled by {@link splitGlobals}), for --help, the manual and completions. */
export const GLOBAL_OPTIONS: readonly (readonly [flags: string, description: string])[] = [
  ['--debug', 'log every command run, show stack traces'],
  ['-q, --quiet', 'only warnings and errors'],
  ['--config <file>', 'extra configuration file (over /usr/lib/tiu/tiu.conf and /etc/tiu/tiu.conf)'],
  ['-V, --version', 'print the version'],
];

/**
 * Takes the global options out of argv wherever they stand (before or after the command), so
 * that they never clash with a command's own options (like create's --version).
 */
export function splitGlobals(args: string[]): { globals: GlobalOptions; rest: string[] } {
  const globals: GlobalOptions = {};
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      rest.push(...args.slice(i));
      break;
    }
    if (a === '--debug') globals.debug = true;
    else if (a === '-q' || a === '--quiet') globals.quiet = true;
    else if (a === '--config' && i + 1 < args.length) globals.config = args[++i];
    else if (a.startsWith('--config=')) globals.config = a.slice('--config='.length);
    else rest.push(a);
  }
  return { globals, rest };
}

type Runner = (ctx: Context, ...args: any[]) => Promise<number | void>;

/**
 * Each command's module, imported only when that command runs (static specifiers, so a bundler
 * sees them and `tsc` checks them).
 */
const COMMANDS = {
  keygen: () => import('./commands/keygen.ts'),
  create: () => import('./commands/create.ts'),
  info: () => import('./commands/info.ts'),
  verify: () => import('./commands/verify.ts'),
  install: () => import('./commands/install.ts'),
  extract: () => import('./commands/extract.ts'),
  update: () => import('./commands/update.ts'),
  status: () => import('./commands/status.ts'),
  rollback: () => import('./commands/rollback.ts'),
  cleanup: () => import('./commands/cleanup.ts'),
  pin: () => import('./commands/pin.ts'),
  unpin: () => import('./commands/unpin.ts'),
  'health-check': () => import('./commands/health-check.ts'),
  'etc-diff': () => import('./commands/etc-diff.ts'),
  'etc-sync': () => import('./commands/etc-sync.ts'),
  // Update repositories (#12): build side and device side.
  publish: () => import('./commands/publish.ts'),
  'repo-init': () => import('./commands/repo-init.ts'),
  'repo-promote': () => import('./commands/repo-promote.ts'),
  'repo-refresh': () => import('./commands/repo-refresh.ts'),
  'repo-status': () => import('./commands/repo-status.ts'),
  'repo-rotate-key': () => import('./commands/repo-rotate-key.ts'),
  check: () => import('./commands/check.ts'),
  channel: () => import('./commands/channel.ts'),
  'factory-reset': () => import('./commands/factory-reset.ts'),
  daemon: () => import('./commands/daemon.ts'),
  delta: () => import('./commands/delta.ts'),
} satisfies Record<string, () => Promise<{ run: Runner }>>;

/** Builds a commander action that lazily imports the command's module and calls its `run`. */
function lazy(module: keyof typeof COMMANDS, _program: Command, state: State): (...args: any[]) => Promise<void> {
  return async (...args: any[]) => {
    const cmd = args[args.length - 1] as Command;
    const g = state.globals;
    const level: LogLevel = g.debug ? 'debug' : g.quiet ? 'warn' : 'info';
    const log = createLogger(level);
    const sys = createSystem(log);
    const config = await loadConfig({ file: g.config });
    state.ctx = { sys, log, config, env: readTiuEnv(), debug: !!g.debug, out: (s) => process.stdout.write(s.endsWith('\n') ? s : s + '\n') };
    const mod: { run: Runner } = await COMMANDS[module]();
    await testHook('command');
    await testHook('uncaught');
    await testHook('rejection');
    const code = await mod.run(state.ctx, ...args.slice(0, -2), { ...args[args.length - 2], ...cmd.opts() });
    process.exitCode = typeof code === 'number' ? code : 0;
  };
}

export function buildProgram(state: State = { globals: {} }): Command {
  const program = new Command('tiu')
    .description('transactional image updates for btrfs-rooted immutable Linux systems')
    .addHelpText(
      'after',
      `\nGlobal options (anywhere on the line):\n${GLOBAL_OPTIONS.map(([f, d]) => `  ${f.padEnd(15)}  ${d}`).join('\n')}\n\nExit codes: see docs/errors.md (0 ok, 2 usage, 3-5 input, 10-23 archive and trust, 30-49 device, 50-63 system, 70 bug; tiu update --unchanged-exit-77: 77).`,
    )
    // Parse errors are reported by main() in tiu's own form (and as JSON under --json).
    .configureOutput({ outputError: () => {} })
    .exitOverride();

  const example = (c: Command, text: string) => c.addHelpText('after', `\nExample:\n  ${text}\n`);
  const rootOpt = () => new Option('--root <dir>', 'the system to work on (a mounted btrfs root)').default('/');
  /** The result as one JSON object on stdout (docs/json.md); errors too. */
  const jsonOpt = () => new Option('--json', 'machine-readable result on stdout (docs/json.md)');

  example(
    program
      .command('keygen')
      .description('make a development CA and signing certificate (not for production)')
      .requiredOption('-o, --out <dir>', 'directory for the keys and certificates')
      .option('--cn <name>', 'common name of the signing certificate', 'tiu development signing')
      .option('--days <n>', 'validity in days', '3650')
      .option('--intermediate', 'also make an intermediate CA between the CA and the signing certificate')
      .action(lazy('keygen', program, state)),
    'tiu keygen -o ./keys && cp ./keys/keyring.pem /etc/tiu/keyring.pem',
  );

  example(
    program
      .command('create')
      .description('pack a root filesystem tree (directory or tarball) into a signed archive')
      .argument('<rootfs>', 'root tree: a directory, or a .tar, .tar.gz, .tar.xz, .tar.zst')
      .requiredOption('-o, --output <file>', 'archive to write (e.g. os-1.2.tiu)')
      .requiredOption('--key <pem>', 'signing private key (PEM)')
      .requiredOption('--cert <pem>', 'signing certificate (PEM)')
      .option('--chain <pem>', 'intermediate certificates to embed (PEM)')
      .requiredOption('--compatible <string>', 'which devices may install it (must equal the device setting)')
      .requiredOption('--version <version>', 'the image version (e.g. 2026.11.23)')
      .option('--build-id <id>', 'build identifier (CI job, OBS build number)')
      .option('--compression <alg>', 'squashfs compression: zstd, xz, gzip, lz4, lzo, lzma')
      .option('--level <n>', 'compression level')
      .option('--block-size <bytes>', 'squashfs block size')
      .option('--exclude <path...>', 'paths whose contents the image leaves out (replaces the default list)')
      .option('--shipped-initrd', 'the image ships its own initrd: the device must not regenerate it')
      .option('--tmpdir <dir>', 'where to unpack tarballs')
      .option('--no-progress', 'no progress output')
      .action(lazy('create', program, state)),
    'SOURCE_DATE_EPOCH=1700000000 tiu create ./rootfs -o os-1.0.tiu --key signing.key.pem --cert signing.cert.pem --compatible demo-x86_64 --version 1.0',
  );

  example(
    program
      .command('delta')
      .description('make a signed delta from one archive to the next (apply it with tiu extract or tiu update)')
      .argument('<old>', 'the .tiu the devices have')
      .argument('<new>', 'the .tiu they should get')
      .requiredOption('-o, --output <file>', 'delta to write (e.g. os-1.0-1.1.tiud)')
      .requiredOption('--key <pem>', 'signing private key (PEM)')
      .requiredOption('--cert <pem>', 'signing certificate (PEM)')
      .option('--chain <pem>', 'intermediate certificates to embed (PEM)')
      .option('--keyring <pem>', 'trusted CA certificates to verify both archives with')
      .option('--json', 'machine-readable result')
      .action(lazy('delta', program, state)),
    'tiu delta os-1.0.tiu os-1.1.tiu -o os-1.0-1.1.tiud --key signing.key.pem --cert signing.cert.pem --keyring keyring.pem',
  );

  example(
    program
      .command('info')
      .description('show an archive\'s manifest and whether its signature and verity tree verify (or a delta\'s base, target and signatures)')
      .argument('<archive>', 'the .tiu file, or a .tiud delta')
      .option('--keyring <pem>', 'trusted CA certificates (default from tiu.conf: /etc/tiu/keyring.pem)')
      .option('--json', 'machine-readable output')
      .option('--no-verify-data', 'skip checking every data block (faster, signature only)')
      .action(lazy('info', program, state)),
    'tiu info os-1.0.tiu --keyring ./keys/keyring.pem',
  );

  example(
    program
      .command('verify')
      .description('verify an archive (signature, every data block), or with --system the installed system against its signed index')
      .argument('[archive]', 'the .tiu file or .tiud delta (not with --system)')
      .option('--keyring <pem>', 'trusted CA certificates')
      .option('--compatible <string>', 'also require this compatible string')
      .option('--system', 'check the booted snapshot: every file\'s content, type, mode, owner, xattrs (not /etc, /var, ...)')
      .option('--snapshot <n>', 'with --system: check snapshot N instead of the booted one')
      .addOption(rootOpt())
      .addOption(jsonOpt())
      .action(lazy('verify', program, state)),
    'tiu verify os-1.0.tiu --keyring ./keys/keyring.pem && echo ok\n  tiu verify --system --json   # exit 100 (SYSTEM_MODIFIED) if anything differs',
  );

  example(
    program
      .command('install')
      .description('factory install: lay out an empty btrfs and make snapshot 1 from an archive')
      .argument('<archive>', 'the .tiu file, or a .tiud delta')
      .requiredOption('--root <dir>', 'mount point of the empty btrfs (top level)')
      .option('--keyring <pem>', 'trusted CA certificates')
      .option('--compatible <string>', 'require this compatible string (written to the new system\'s tiu.conf)')
      .action(lazy('install', program, state)),
    'mkfs.btrfs /dev/sdX2 && mount /dev/sdX2 /mnt && tiu install os-1.0.tiu --root /mnt',
  );

  example(
    program
      .command('extract')
      .description('apply an archive into a new snapshot and make it the next default')
      .argument('<archive>', 'the .tiu file, or a .tiud delta against the base snapshot')
      .addOption(rootOpt())
      .option('--base <n>', 'snapshot to start from (default: the current default)')
      .option('--no-default', 'do not make the new snapshot the default')
      .option('--keyring <pem>', 'trusted CA certificates')
      .option('--dry-run', 'print the plan, change nothing')
      .option('--allow-downgrade', 'accept an image whose version is lower than the base snapshot\'s')
      .option('--json', 'machine-readable result')
      .action(lazy('extract', program, state)),
    'tiu extract os-1.1.tiu && reboot',
  );

  example(
    program
      .command('update')
      .description('fetch, verify and extract an update; a reboot activates it')
      .addOption(rootOpt())
      .option('--source <file|url>', 'archive file or https URL (default: [update] source in tiu.conf)')
      .option('--repository <url>', 'update repository (https://, http://, file://; default: [update] repository)')
      .option('--channel <name>', 'channel to take the update from (default: tiu channel, then [update] channel)')
      .option('--allow-downgrade', 'install an image older than the installed one')
      .option('--keyring <pem>', 'trusted CA certificates')
      .option('--limit-rate <rate>', 'download at most this many bytes per second (k, M suffixes)')
      .option('--stall-timeout <seconds>', 'give up a download slower than 1 KiB/s for this long (default [download] stall_timeout: 60)')
      .option('--timeout <seconds>', 'give up a download that takes longer than this (default [download] timeout: 21600)')
      .option('--reboot', 'reboot when the update is in place')
      .option('--reinstall', 'make a new snapshot even if the image is the one already installed')
      .option('--unchanged-exit-77', 'exit 77 (not 0) when the image is already installed and nothing was done')
      .option('--json', 'machine-readable result')
      .action(lazy('update', program, state)),
    'tiu update --source https://updates.example.com/os-1.1.tiu',
  );

  example(
    program
      .command('status')
      .description('list snapshots: version, booted, default, in progress, health, pinned')
      .addOption(rootOpt())
      .option('--json', 'machine-readable output')
      .action(lazy('status', program, state)),
    'tiu status',
  );

  example(
    program
      .command('rollback')
      .description('make an earlier snapshot the default (default: the previous good one)')
      .argument('[n]', 'snapshot number')
      .addOption(rootOpt())
      .option('--force', 'also allow bad or in-progress snapshots')
      .addOption(jsonOpt())
      .action(lazy('rollback', program, state)),
    'tiu rollback && reboot',
  );

  example(
    program
      .command('cleanup')
      .description('delete old snapshots and leftovers of interrupted runs')
      .addOption(rootOpt())
      .option('--keep <n>', 'how many tiu snapshots to keep (default from tiu.conf)')
      .option('--dry-run', 'print what would be deleted')
      .addOption(jsonOpt())
      .action(lazy('cleanup', program, state)),
    'tiu cleanup --keep 3',
  );

  for (const [name, desc] of [
    ['pin', 'protect a snapshot from cleanup'],
    ['unpin', 'allow cleanup to delete a snapshot again'],
  ] as const) {
    example(
      program.command(name).description(desc).argument('<n>', 'snapshot number').addOption(rootOpt()).addOption(jsonOpt()).action(lazy(name, program, state)),
      `tiu ${name} 3`,
    );
  }

  example(
    program
      .command('health-check')
      .description('check the booted snapshot; mark it good, or roll back and reboot once (run at boot by tiu-health.service)')
      .addOption(rootOpt())
      .option('--sync-only', 'only make the boot loader entries and default follow the snapshots')
      .option('--no-reboot', 'never reboot (like the kernel option tiu.health.reboot=0)')
      .option('--dry-run', 'print the reboot/isolate instead of running it (also TIU_HEALTH_DRY=1)')
      .option('--plugin-timeout <seconds>', 'time each plugin in /usr/lib/tiu/health.d and /etc/tiu/health.d may take', '120')
      .addOption(jsonOpt())
      .action(lazy('health-check', program, state)),
    'tiu health-check --dry-run',
  );

  example(
    program
      .command('factory-reset')
      .description('erase all user data at the next boot: the current image, vendor /etc, empty /var /home /root /srv /opt /usr/local')
      .addOption(rootOpt())
      .option('--keep-snapshots', 'keep the other snapshots (default: deleted with the old data after the reset boot)')
      .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
      .option('--json', 'machine-readable result')
      .action(lazy('factory-reset', program, state)),
    'tiu factory-reset --yes && reboot',
  );

  example(
    program
      .command('daemon')
      .description('the update service on the system bus (org.tiu.Updater1; see docs/dbus.md), started by D-Bus activation')
      .addOption(rootOpt())
      .option('--source <url>', 'update archive URL (default: [update] source in tiu.conf)')
      .action(lazy('daemon', program, state)),
    'busctl call org.tiu.Updater1 /org/tiu/Updater1 org.tiu.Updater1 Download',
  );

  const etc = program.command('etc').description('inspect /etc against the vendor defaults');
  example(
    etc
      .command('diff')
      .description('show local changes to /etc against the image\'s vendor /etc')
      .addOption(rootOpt())
      .option('--json', 'machine-readable output')
      .action(lazy('etc-diff', program, state)),
    'tiu etc diff',
  );
  example(
    etc
      .command('sync')
      .description('carry /etc edits made after an update was prepared into the snapshot that boots next')
      .addOption(rootOpt())
      .action(lazy('etc-sync', program, state)),
    'tiu etc sync   # run at shutdown by tiu-etc-sync.service',
  );

  declareRepository(program, state, example, rootOpt);
  return program;
}

/** The repository commands (#12): publish, repo *, check, channel. */
function declareRepository(program: Command, state: State, example: (c: Command, text: string) => Command, rootOpt: () => Option): void {
  const keysOpt = () => new Option('--keys <dir>', 'key directory (default: <repo>.keys next to the repository)');
  example(
    program
      .command('publish')
      .description('add a signed archive to an update repository on a channel')
      .argument('<archive>', 'the .tiu file (its manifest gives device and version)')
      .requiredOption('--repo <dir>', 'the repository directory (made by tiu repo init)')
      .addOption(keysOpt())
      .option('--channel <name>', 'channel: stable, candidate, beta, edge…', 'stable')
      .option('--phased <percent>', 'share of devices that may take it (0-100)', '100')
      .option('--keyring <pem>', 'trusted CA certificates to verify the archive')
      .option('--deltas <n>', 'make deltas from the last N versions on the channel (needs --key/--cert)', '2')
      .option('--key <pem>', 'archive signing key, to sign the deltas')
      .option('--cert <pem>', 'archive signing certificate, to sign the deltas')
      .option('--chain <pem>', 'intermediate certificates for the deltas')
      .option('--json', 'machine-readable result')
      .action(lazy('publish', program, state)),
    'tiu publish os-1.1.tiu --repo /srv/updates --channel stable --phased 10 --key signing.key.pem --cert signing.cert.pem',
  );
  const repo = program.command('repo').description('make and maintain an update repository (static files, TUF metadata)');
  example(repo.command('init').description('new repository: keys and the first signed metadata').argument('<dir>', 'directory to serve').addOption(keysOpt())
    .option('--root-keys <n>', 'number of root keys (root.key.pem, root-2.key.pem, …)', '1').option('--threshold <k>', 'root keys needed to sign a new root version', '1')
    .option('--json', 'machine-readable result').action(lazy('repo-init', program, state)), 'tiu repo init /srv/updates --keys /secure/updates.keys --root-keys 3 --threshold 2');
  example(
    repo.command('promote').description('put a published version on another channel (or change its phase)').argument('<version>', 'image version')
      .requiredOption('--repo <dir>', 'the repository').addOption(keysOpt()).requiredOption('--from <channel>', 'channel it is on').requiredOption('--to <channel>', 'channel to add')
      .option('--phased <percent>', 'share of devices on the new channel (0-100)').option('--compatible <string>', 'only this device type').option('--json', 'machine-readable result')
      .action(lazy('repo-promote', program, state)),
    'tiu repo promote 1.1 --repo /srv/updates --from candidate --to stable --phased 10',
  );
  example(
    repo.command('refresh').description('re-sign snapshot and timestamp with fresh expiry (online keys; run daily)')
      .requiredOption('--repo <dir>', 'the repository').addOption(keysOpt())
      .option('--timestamp-expires <duration>', 'timestamp lifetime, e.g. 1d, 12h, 30s', undefined).option('--snapshot-expires <duration>', 'snapshot lifetime, e.g. 7d')
      .option('--json', 'machine-readable result').action(lazy('repo-refresh', program, state)),
    'tiu repo refresh --repo /srv/updates   # from cron, before the timestamp expires',
  );
  example(repo.command('status').description('roles with versions and expiry, images with channels').requiredOption('--repo <dir>', 'the repository').option('--json', 'machine-readable output').action(lazy('repo-status', program, state)), 'tiu repo status --repo /srv/updates');
  example(
    repo.command('rotate-key').description('replace a role\'s key: new root version signed by the old root key').argument('<role>', 'root, targets, snapshot or timestamp')
      .requiredOption('--repo <dir>', 'the repository').addOption(keysOpt()).option('--json', 'machine-readable result').action(lazy('repo-rotate-key', program, state)),
    'tiu repo rotate-key timestamp --repo /srv/updates',
  );
  example(
    program
      .command('check')
      .description('show what tiu update would install and why (channel, phase, path, scores); changes nothing')
      .addOption(rootOpt())
      .option('--repository <url>', 'update repository (default: [update] repository)')
      .option('--channel <name>', 'channel (default: tiu channel, then [update] channel)')
      .option('--source <file>', 'instead: compare a local archive with the installed image')
      .option('--allow-downgrade', 'consider an older image')
      .option('--keyring <pem>', 'trusted CA certificates (for --source)')
      .option('--json', 'machine-readable output')
      .action(lazy('check', program, state)),
    'tiu check --json',
  );
  example(
    program
      .command('channel')
      .description('show the channel this device follows, or choose another (recorded with the time)')
      .argument('[set]', '"set" to choose a channel')
      .argument('[name]', 'stable, candidate, beta, edge…')
      .addOption(rootOpt())
      .option('--json', 'machine-readable output')
      .action(lazy('channel', program, state)),
    'tiu channel set beta && tiu check',
  );
}

/** Runs the CLI; returns the exit code. Never throws. */
export async function main(argv: string[]): Promise<number> {
  const { globals, rest } = splitGlobals(argv.slice(2));
  const state: State = { globals };
  const debug = !!globals.debug;
  installGuard(debug);
  if (rest.length === 1 && (rest[0] === '--version' || rest[0] === '-V')) {
    process.stdout.write(`tiu ${TIU_VERSION}\n`);
    return 0;
  }
  const program = buildProgram(state);
  if (rest.length === 0) {
    program.outputHelp();
    return 2;
  }
  const json = rest.includes('--json');
  try {
    await program.parseAsync(rest, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    let e: TiuError;
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      e = fromCommanderError(err, program.commands.some((c) => c.name() === rest[0]) ? rest[0] : undefined);
    } else {
      e = toTiuError(err);
    }
    // INTERNAL: one line, no stack unless --debug (src/tiu/guard.ts).
    writeStderr('error', e.code === 'INTERNAL' ? internalErrorLine(e) : errorLine(e));
    if (json) process.stdout.write(`${JSON.stringify(errorJson(e))}\n`);
    if (debug) writeStderr('debug', formatCause(err));
    return e.exitCode;
  }
}

function formatCause(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 8; depth++) {
    if (cur instanceof Error) {
      parts.push(cur.stack ?? String(cur));
      if (cur instanceof TiuError && cur.details) parts.push(JSON.stringify(cur.details, null, 2));
      cur = cur.cause;
    } else {
      parts.push(String(cur));
      break;
    }
  }
  return parts.join('\ncaused by: ');
}
