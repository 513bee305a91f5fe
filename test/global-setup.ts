/** Runs once before the suite: checks that we are root and the real tools are installed. */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
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
}
