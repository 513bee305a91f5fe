/**
 * Verity hashing throughput: runs bench/verity-speed.ts (owned by the verity module; it measures
 * tiu's block hasher and verifyHashTree against `openssl speed -bytes 4096 -seconds 3 sha256`).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { BenchContext } from '../lib/context.ts';
import type { BenchReport } from '../lib/types.ts';

/** Parses verity-speed.ts output. Pure. */
export function parseVeritySpeed(text: string): Pick<BenchReport['verity'], 'opensslMBps' | 'rows'> {
  const o = /^openssl speed sha256.*?:\s*([\d.]+) MB\/s/m.exec(text);
  if (!o) throw new Error(`no openssl line in verity-speed output:\n${text.slice(0, 1000)}`);
  const rows: BenchReport['verity']['rows'] = [];
  for (const line of text.split('\n')) {
    const m = /^(.*?)\s+([\d.]+) MB\/s\s+([\d.]+)% of openssl\s*$/.exec(line);
    if (m) rows.push({ name: m[1]!.trim(), MBps: Number(m[2]), pctOfOpenssl: Number(m[3]) });
  }
  if (!rows.length) throw new Error(`no measurement rows in verity-speed output:\n${text.slice(0, 1000)}`);
  return { opensslMBps: Number(o[1]), rows };
}

export async function benchVerity(ctx: BenchContext): Promise<void> {
  const script = join(ctx.repo, 'bench/verity-speed.ts');
  if (!existsSync(script)) {
    ctx.report.verity.error = 'bench/verity-speed.ts does not exist';
    return;
  }
  ctx.say('verity: node bench/verity-speed.ts 512');
  const r = await ctx.sys.run(process.execPath, [script, '512'], { cwd: ctx.repo });
  Object.assign(ctx.report.verity, parseVeritySpeed(r.stdout));
}
