/**
 * `--json` on every command that reports a result (issue #19, docs/json.md): each command is run
 * on a real loop-mounted btrfs device and its stdout parsed and checked against the documented
 * shape (zod, strict where the shape is tiu's own). Errors under --json are one object too. The
 * command tree is walked, so a command added without --json fails here.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { z } from 'zod';
import type { Command } from 'commander';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, type ArchiveSet } from './helpers/device.ts';
import { buildProgram } from '../src/tiu/cli.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-json-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Commands that report no result worth a document (they make files, or run at shutdown). */
// daemon: a service; it reports over D-Bus (docs/dbus.md), not on stdout.
const WITHOUT_JSON = new Set(['keygen', 'create', 'install', 'etc sync', 'daemon']);

function leaves(cmd: Command, prefix = ''): { name: string; cmd: Command }[] {
  return cmd.commands.flatMap((c) => {
    const name = `${prefix}${c.name()}`;
    return c.commands.length ? leaves(c, `${name} `) : [{ name, cmd: c }];
  });
}

const num = z.number().int().positive();
const snapshotRow = z.object({ number: num, date: z.string(), version: z.string().nullable(), booted: z.boolean(), default: z.boolean(), inProgress: z.boolean(), pinned: z.boolean(), health: z.string(), description: z.string(), etcMerge: z.unknown() }).passthrough();
const SHAPES = {
  error: z.strictObject({ error: z.strictObject({ code: z.string().regex(/^[A-Z_]+$/), message: z.string().min(1), hint: z.string().nullable(), exit: z.number().int() }) }),
  status: z.strictObject({ root: z.string(), snapshots: z.array(snapshotRow) }),
  info: z.object({ file: z.string(), size: num, signature: z.object({ ok: z.literal(true) }).passthrough(), verity: z.object({ ok: z.boolean().nullable() }).passthrough(), manifest: z.object({ version: z.string(), compatible: z.string() }).passthrough() }),
  verify: z.strictObject({ file: z.string(), ok: z.literal(true), compatible: z.string(), version: z.string(), signer: z.strictObject({ subject: z.string(), commonName: z.string().nullable() }), dataBlocks: num }),
  extract: z.object({ number: num, base: num, version: z.string(), stats: z.object({ written: z.number() }).passthrough(), bytesWritten: z.number(), verification: z.enum(['dm-verity', 'userspace']), trustedBaseIndex: z.boolean(), madeDefault: z.boolean() }).passthrough(),
  updateUnchanged: z.strictObject({ status: z.literal('unchanged'), root: z.string(), number: num, version: z.string(), pending: z.boolean() }),
  pin: z.strictObject({ root: z.string(), number: num, pinned: z.boolean() }),
  rollback: z.strictObject({ root: z.string(), default: num, previous: num.nullable(), changed: z.boolean() }),
  cleanup: z.strictObject({ root: z.string(), keep: z.number().int(), dryRun: z.boolean(), interrupted: z.array(num), planned: z.array(z.strictObject({ number: num, reason: z.string() })), deleted: z.array(z.strictObject({ number: num, reason: z.string() })) }),
  healthCheck: z.strictObject({ root: z.string(), verdict: z.string(), booted: num.nullable(), checks: z.array(z.strictObject({ name: z.string(), ok: z.boolean(), skipped: z.boolean(), detail: z.string() })), actions: z.array(z.unknown()), messages: z.array(z.string()) }),
  healthSync: z.strictObject({ root: z.string(), syncOnly: z.literal(true), bootloader: z.string(), location: z.unknown(), added: z.number(), removed: z.number(), default: z.unknown() }),
  etcDiff: z.array(z.object({ path: z.string(), change: z.enum(['added', 'modified', 'deleted']) }).passthrough()),
};

async function json<T extends z.ZodType>(shape: T, args: string[], env?: Record<string, string>, exit = 0): Promise<z.infer<T>> {
  const r = await cli([...args, '--json'], { env });
  expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(exit);
  let doc: unknown;
  expect(() => (doc = JSON.parse(r.stdout)), `stdout of ${args.join(' ')} is one JSON document:\n${r.stdout}`).not.toThrow();
  const parsed = shape.safeParse(doc);
  expect(parsed.success, `${args.join(' ')}: ${parsed.error?.message}\n${r.stdout}`).toBe(true);
  return parsed.data as z.infer<T>;
}

describe('--json', () => {
  it('every command that reports a result accepts --json', () => {
    const names = leaves(buildProgram()).filter((l) => !WITHOUT_JSON.has(l.name));
    expect(names.length).toBeGreaterThanOrEqual(11);
    for (const { name, cmd } of names) expect(cmd.options.map((o) => o.long), name).toContain('--json');
  });

  it('each command prints its documented shape; errors are an error object', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const R = dev.root;
    const K = ['--keyring', A.keys.keyring];
    const cfg = join(work, 'config');
    await mkdir(join(cfg, 'etc/tiu'), { recursive: true });
    const env = { TIU_CONFIG_ROOT: cfg, TIU_HEALTH_DRY: '1' };

    const st = await json(SHAPES.status, ['status', '--root', R]);
    expect(st.snapshots.map((s) => s.number)).toEqual([1]);
    expect((await json(SHAPES.info, ['info', A.v2, ...K])).manifest.version).toBe('2.0');
    expect(await json(SHAPES.verify, ['verify', A.v2, ...K])).toMatchObject({ ok: true, version: '2.0', compatible: 'test-x86_64' });
    const ex = await json(SHAPES.extract, ['extract', A.v2, '--root', R, ...K]);
    expect(ex).toMatchObject({ number: 2, base: 1, madeDefault: true });
    expect(await json(SHAPES.updateUnchanged, ['update', '--source', A.v2, '--root', R, ...K])).toEqual({ status: 'unchanged', root: R, number: 2, version: '2.0', pending: true });
    expect(await json(SHAPES.pin, ['pin', '1', '--root', R])).toEqual({ root: R, number: 1, pinned: true });
    expect(await json(SHAPES.pin, ['unpin', '1', '--root', R])).toEqual({ root: R, number: 1, pinned: false });
    expect(await json(SHAPES.rollback, ['rollback', '1', '--root', R])).toEqual({ root: R, default: 1, previous: 2, changed: true });
    expect(await json(SHAPES.rollback, ['rollback', '1', '--root', R])).toEqual({ root: R, default: 1, previous: 1, changed: false });
    const dry = await json(SHAPES.cleanup, ['cleanup', '--keep', '0', '--dry-run', '--root', R]);
    expect(dry.deleted).toEqual([]);
    const done = await json(SHAPES.cleanup, ['cleanup', '--keep', '0', '--root', R]);
    expect(done.deleted).toEqual(dry.planned);
    expect(await json(SHAPES.healthSync, ['health-check', '--sync-only', '--root', R], env)).toMatchObject({ syncOnly: true });
    const h = await json(SHAPES.healthCheck, ['health-check', '--root', R], env);
    expect(h.checks.length).toBeGreaterThan(0);
    await json(SHAPES.etcDiff, ['etc', 'diff', '--root', R]);

    // Errors: one object on stdout, the exit code of the error.
    const e = await json(SHAPES.error, ['pin', '99', '--root', R], undefined, 33);
    expect(e.error).toMatchObject({ code: 'SNAPSHOT_NOT_FOUND', exit: 33 });
    expect((await json(SHAPES.error, ['verify', join(work, 'none.tiu'), ...K], undefined, 3)).error.code).toBe('INPUT_NOT_FOUND');
    expect((await json(SHAPES.error, ['status', '--bogus'], undefined, 2)).error.code).toBe('USAGE');
  });
});
