/** Runs once before the suite: checks that we are root and the real tools are installed. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';

export default function setup(): () => void {
  if (process.getuid?.() !== 0) throw new Error('the tiu test suite runs real mkfs.btrfs, losetup and mount: run it as root');
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw new Error(`tests need Node.js 24, this is ${process.version}: run via 'npm test' (uses node_modules/.bin/node)`);
  for (const tool of ['mksquashfs', 'unsquashfs', 'veritysetup', 'mkfs.btrfs', 'btrfs', 'rsync', 'getfattr', 'setfattr', 'openssl', 'losetup']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`required tool ${tool} is missing: run 'npm run setup'`);
    }
  }
  // Lock files and image mount points go to a run directory of this test run, not the host's
  // /run/tiu (a lock file is never deleted by tiu: deleting a flock(2) file races with the
  // next locker). Workers and the tiu processes they spawn inherit the variable.
  const runDir = mkdtempSync('/run/tiu-test-');
  process.env.TIU_RUN_DIR = runDir;
  return () => {
    // Never recurse into a mount someone left (the image mounts are read-only squashfs anyway).
    if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${runDir}/`)) {
      console.warn(`tiu tests: mounts left below ${runDir}; not removed`);
      return;
    }
    const left = readdirSync(runDir, { recursive: true }).map(String).filter((f) => !f.endsWith('.lock') && f !== 'mnt');
    if (left.length) console.warn(`tiu tests: left in ${runDir} (killed processes): ${left.join(', ')}`);
    rmSync(runDir, { recursive: true, force: true });
  };
}
