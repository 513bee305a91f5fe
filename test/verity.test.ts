/**
 * The in-process dm-verity tree against the real veritysetup (cryptsetup 2.6.1): same root hash,
 * same tree bytes, veritysetup accepts our appended tree, and our verifier rejects every tamper.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { randomBytes, randomInt } from 'node:crypto';
import { copyFile, open, readFile, stat, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { computeHashTree, verifyHashTree, verityLayout } from '../src/tiu/verity.ts';
import { TiuError } from '../src/core/errors.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();
const B = 4096;

async function writeRandom(path: string, blocks: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < blocks; ) {
      const n = Math.min(1024, blocks - done);
      await fh.write(randomBytes(n * B), 0, n * B, done * B);
      done += n;
    }
  } finally {
    await fh.close();
  }
}

/** Runs veritysetup format into a separate hash file; returns its root hash and the tree bytes. */
async function veritysetupFormat(dataPath: string, hashPath: string, salt: Buffer): Promise<{ root: string; tree: Buffer }> {
  await writeFile(hashPath, '');
  const r = await sys.run('veritysetup', ['format', '--no-superblock', `--salt=${salt.toString('hex')}`, dataPath, hashPath]);
  const root = /Root hash:\s+([0-9a-f]{64})/.exec(r.stdout)?.[1];
  if (!root) throw new Error(`no root hash in: ${r.stdout}`);
  return { root, tree: await readFile(hashPath) };
}

async function veritysetupVerify(path: string, dataSize: number, salt: Buffer, root: string): Promise<number> {
  const r = await sys.run('veritysetup', [
    'verify', '--no-superblock', `--hash-offset=${dataSize}`, `--data-blocks=${dataSize / B}`, `--salt=${salt.toString('hex')}`, path, path, root,
  ], { allowFailure: true });
  return r.exitCode;
}

async function withFile<T>(path: string, fn: (fh: FileHandle) => Promise<T>, flags = 'r+'): Promise<T> {
  const fh = await open(path, flags);
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

async function expectTiuError(p: Promise<unknown>, code: string, message: RegExp): Promise<TiuError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, 'expected a rejection').toBeInstanceOf(TiuError);
  const e = err as TiuError;
  expect(e.code).toBe(code);
  expect(e.message).toMatch(message);
  return e;
}

describe('computeHashTree and verifyHashTree against veritysetup', () => {
  const sizes: [string, number][] = [
    ['1 block', 1],
    ['127 blocks', 127],
    ['128 blocks', 128],
    ['129 blocks', 129],
    ['128*128+1 blocks', 128 * 128 + 1],
    ['~20 MiB random size', 5000 + randomInt(200)],
  ];
  for (const [name, blocks] of sizes) {
    // workers 0 hashes in this thread; 2 forces the worker pool for every region of >= 4 MiB.
    for (const workers of blocks * B >= 4 * 1024 * 1024 ? [0, 2] : [0]) {
      it(`${name}: same root and tree bytes as veritysetup (workers ${workers}); both verifiers accept`, async () => {
        await using d = await tempDir();
        const data = join(d.path, 'data');
        const archive = join(d.path, 'archive');
        await writeRandom(data, blocks);
        await copyFile(data, archive);
        const salt = randomBytes(32);
        const dataSize = blocks * B;
        const expected = await veritysetupFormat(data, join(d.path, 'hash'), salt);

        const progress: [number, number][] = [];
        const { rootHash, hashSize } = await withFile(archive, (fh) =>
          computeHashTree(fh, { dataSize, hashOffset: dataSize, salt, workers, onProgress: (a, b) => progress.push([a, b]) }));
        expect(rootHash.toString('hex')).toBe(expected.root);
        expect(hashSize).toBe(expected.tree.length);
        expect(hashSize).toBe(verityLayout(blocks).size);
        const written = await readFile(archive);
        expect(written.length).toBe(dataSize + hashSize);
        expect(written.subarray(dataSize).equals(expected.tree)).toBe(true);
        expect(written.subarray(0, dataSize).equals(await readFile(data))).toBe(true);
        // Progress only grows and ends at data plus tree.
        expect(progress.at(-1)).toEqual([dataSize + hashSize, dataSize + hashSize]);
        for (let i = 1; i < progress.length; i++) expect(progress[i]![0]).toBeGreaterThan(progress[i - 1]![0]);

        expect(await veritysetupVerify(archive, dataSize, salt, expected.root)).toBe(0);
        const vprogress: number[] = [];
        await withFile(archive, (fh) => verifyHashTree(fh, {
          dataSize, hashOffset: dataSize, hashSize, salt, rootHash, workers, onProgress: (done) => vprogress.push(done),
        }), 'r');
        expect(vprogress.at(-1)).toBe(dataSize + hashSize);
      });
    }
  }

  it('veritysetup rejects a wrong root hash on the same layout (the check above can fail)', async () => {
    await using d = await tempDir();
    const archive = join(d.path, 'archive');
    await writeRandom(archive, 300);
    const salt = randomBytes(32);
    const { rootHash } = await withFile(archive, (fh) => computeHashTree(fh, { dataSize: 300 * B, hashOffset: 300 * B, salt }));
    rootHash[0]! ^= 1;
    expect(await veritysetupVerify(archive, 300 * B, salt, rootHash.toString('hex'))).not.toBe(0);
  });

  it('leaves bytes after the tree alone and writes the tree at a later offset', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'f');
    await writeRandom(file, 200);
    const tail = randomBytes(100);
    const salt = randomBytes(32);
    const hashOffset = 210 * B; // a gap of 10 blocks between data and tree
    const size = verityLayout(200).size;
    await withFile(file, (fh) => fh.write(tail, 0, tail.length, hashOffset + size));
    const { rootHash, hashSize } = await withFile(file, (fh) => computeHashTree(fh, { dataSize: 200 * B, hashOffset, salt }));
    const bytes = await readFile(file);
    expect(bytes.subarray(hashOffset + hashSize).equals(tail)).toBe(true);
    expect(bytes.subarray(200 * B, hashOffset).every((b) => b === 0)).toBe(true);
    await withFile(file, (fh) => verifyHashTree(fh, { dataSize: 200 * B, hashOffset, hashSize, salt, rootHash }), 'r');
    const r = await sys.run('veritysetup', ['verify', '--no-superblock', `--hash-offset=${hashOffset}`, '--data-blocks=200',
      `--salt=${salt.toString('hex')}`, file, file, rootHash.toString('hex')], { allowFailure: true });
    expect(r.exitCode).toBe(0);
  });
});

describe('verifyHashTree rejects', () => {
  // 128*128+1 blocks: three levels (1, 2 and 129 hash blocks), each with a padded last block.
  const blocks = 128 * 128 + 1;
  const dataSize = blocks * B;
  const layout = verityLayout(blocks);
  const salt = randomBytes(32);
  let dir: { path: string } & AsyncDisposable;
  let file: string;
  let rootHash: Buffer;
  let hashSize: number;

  beforeAll(async () => {
    dir = await tempDir();
    file = join(dir.path, 'archive');
    await writeRandom(file, blocks);
    ({ rootHash, hashSize } = await withFile(file, (fh) => computeHashTree(fh, { dataSize, hashOffset: dataSize, salt, workers: 0 })));
  });
  afterAll(async () => {
    await dir[Symbol.asyncDispose]();
  });

  const verify = (over: Partial<Parameters<typeof verifyHashTree>[1]> = {}): Promise<void> =>
    withFile(file, (fh) => verifyHashTree(fh, { dataSize, hashOffset: dataSize, hashSize, salt, rootHash, ...over }), 'r');

  /** Flips one byte at `offset`, runs `fn`, flips it back. */
  async function flipped<T>(offset: number, fn: () => Promise<T>): Promise<T> {
    const flip = () => withFile(file, async (fh) => {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, offset);
      b[0]! ^= 0x40;
      await fh.write(b, 0, 1, offset);
    });
    await flip();
    try {
      return await fn();
    } finally {
      await flip();
    }
  }

  const levelAt = (level: number) => layout.levels.find((l) => l.level === level)!;
  const hashBlockOffset = (level: number, block: number) => dataSize + levelAt(level).offset + block * B;

  it('accepts the untouched file (baseline for the cases below)', async () => {
    await verify();
    await verify({ workers: 2 });
  });

  const cases: { name: string; offset: number; message: RegExp; details: Record<string, unknown> }[] = [
    { name: 'first data block', offset: 0, message: /^verity: data block 0 \(byte offset 0\) does not match the hash tree$/, details: { kind: 'data', block: 0 } },
    { name: 'middle data block', offset: 8192 * B + 1234, message: new RegExp(`^verity: data block 8192 \\(byte offset ${8192 * B}\\) does not match`), details: { kind: 'data', block: 8192 } },
    { name: 'last data block', offset: dataSize - 1, message: new RegExp(`^verity: data block 16384 \\(byte offset ${16384 * B}\\) does not match`), details: { kind: 'data', block: 16384 } },
    { name: 'level 0, first hash block', offset: hashBlockOffset(0, 0) + 5, message: new RegExp(`^verity: hash block 0 of level 0 \\(byte offset ${hashBlockOffset(0, 0)}\\) does not match the hash tree`), details: { kind: 'hash', level: 0, block: 0 } },
    { name: 'level 0, a middle hash block', offset: hashBlockOffset(0, 77) + 4095, message: /^verity: hash block 77 of level 0 /, details: { kind: 'hash', level: 0, block: 77 } },
    { name: 'level 0, last digest', offset: hashBlockOffset(0, 128) + 31, message: /^verity: hash block 128 of level 0 /, details: { kind: 'hash', level: 0, block: 128 } },
    { name: 'level 1, last hash block', offset: hashBlockOffset(1, 1) + 0, message: /^verity: hash block 1 of level 1 .* does not match the hash tree$/, details: { kind: 'hash', level: 1, block: 1 } },
    { name: 'level 2 (top)', offset: hashBlockOffset(2, 0) + 40, message: /^verity: hash block 0 of level 2 .* does not match the root hash$/, details: { kind: 'hash', level: 2, block: 0 } },
    { name: 'level 0 padding', offset: hashBlockOffset(0, 128) + 32, message: /^verity: hash block 128 of level 0 .* has non-zero padding/, details: { kind: 'hash', level: 0, block: 128 } },
    { name: 'level 1 padding', offset: hashBlockOffset(1, 1) + 4095, message: /^verity: hash block 1 of level 1 .* has non-zero padding/, details: { kind: 'hash', level: 1, block: 1 } },
    { name: 'level 2 padding', offset: hashBlockOffset(2, 0) + 64, message: /^verity: hash block 0 of level 2 .* has non-zero padding/, details: { kind: 'hash', level: 2, block: 0 } },
  ];
  for (const c of cases) {
    it(`a flipped byte in the ${c.name}`, async () => {
      await flipped(c.offset, async () => {
        for (const workers of [0, 2]) {
          const e = await expectTiuError(verify({ workers }), 'ARCHIVE_VERITY', c.message);
          expect(e.details).toMatchObject(c.details);
          expect(e.hint).toMatch(/download it again/);
        }
        // The real tool agrees the file is damaged (padding excepted: the kernel never reads it,
        // but it changes the block's hash all the same).
        expect(await veritysetupVerify(file, dataSize, salt, rootHash.toString('hex'))).not.toBe(0);
      });
    });
  }

  it('a wrong root hash', async () => {
    const wrong = Buffer.from(rootHash);
    wrong[31]! ^= 1;
    await expectTiuError(verify({ rootHash: wrong }), 'ARCHIVE_VERITY', /hash block 0 of level 2 .* does not match the root hash/);
    await expectTiuError(verify({ rootHash: rootHash.subarray(0, 31) }), 'ARCHIVE_VERITY', /root hash must be 32 bytes/);
  });

  it('a wrong salt', async () => {
    const wrong = Buffer.from(salt);
    wrong[0]! ^= 1;
    await expectTiuError(verify({ salt: wrong }), 'ARCHIVE_VERITY', /does not match the root hash/);
    await expectTiuError(verify({ salt: salt.subarray(1) }), 'ARCHIVE_VERITY', /does not match the root hash/);
  });

  it('a hash size other than the layout needs', async () => {
    for (const h of [hashSize - B, hashSize + B, hashSize - 1, 0]) {
      await expectTiuError(verify({ hashSize: h }), 'ARCHIVE_VERITY', new RegExp(`hash tree size ${h} is not the ${hashSize} bytes`));
    }
  });

  it('a data size or hash offset that is not block-aligned', async () => {
    for (const ds of [dataSize - 1, dataSize + 100, 0, -B]) {
      await expectTiuError(verify({ dataSize: ds }), 'ARCHIVE_VERITY', /data size .* is not a positive multiple of 4096/);
    }
    await expectTiuError(verify({ hashOffset: dataSize + 512 }), 'ARCHIVE_VERITY', /hash offset/);
    await expectTiuError(verify({ hashOffset: dataSize - B }), 'ARCHIVE_VERITY', /hash offset/); // overlaps the data
  });

  it('a data size that moves the tree (one block less)', async () => {
    // The tree of 16384 blocks is smaller: it must not be taken from the wrong place.
    const ds = dataSize - B;
    await expectTiuError(verify({ dataSize: ds, hashOffset: ds, hashSize: verityLayout(ds / B).size }), 'ARCHIVE_VERITY', /does not match/);
  });

  it('a truncated file', async () => {
    await using d = await tempDir();
    const short = join(d.path, 'short');
    await copyFile(file, short);
    await truncate(short, dataSize + hashSize - 1);
    for (const workers of [0, 2]) {
      const e = await withFile(short, (fh) => verifyHashTree(fh, { dataSize, hashOffset: dataSize, hashSize, salt, rootHash, workers }), 'r').catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TiuError);
      expect((e as TiuError).code).toBe('ARCHIVE_TRUNCATED');
    }
    // Data cut short (the tree is read first, so put it elsewhere).
    await truncate(short, 1000 * B + 5);
    for (const workers of [0, 2]) {
      const e = await withFile(short, (fh) => computeHashTree(fh, { dataSize: 2000 * B, hashOffset: 3000 * B, salt, workers }), 'r+').catch((x: unknown) => x);
      expect(e).toBeInstanceOf(TiuError);
      expect((e as TiuError).message).toMatch(`file ends at byte ${1000 * B + 5}`);
      expect((e as TiuError).code).toBe('ARCHIVE_TRUNCATED');
    }
  });
});

describe('single data block (no tree)', () => {
  it('root hash is the digest of the block; tampering is caught against the root', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'one');
    await writeRandom(file, 1);
    const salt = randomBytes(32);
    const expected = await veritysetupFormat(file, join(d.path, 'h'), salt);
    const { rootHash, hashSize } = await withFile(file, (fh) => computeHashTree(fh, { dataSize: B, hashOffset: B, salt }));
    expect(hashSize).toBe(0);
    expect(rootHash.toString('hex')).toBe(expected.root);
    expect((await stat(file)).size).toBe(B);
    await withFile(file, (fh) => verifyHashTree(fh, { dataSize: B, hashOffset: B, hashSize: 0, salt, rootHash }), 'r');
    await withFile(file, (fh) => fh.write(Buffer.from([1]), 0, 1, 4095));
    const e = await expectTiuError(
      withFile(file, (fh) => verifyHashTree(fh, { dataSize: B, hashOffset: B, hashSize: 0, salt, rootHash }), 'r'),
      'ARCHIVE_VERITY', /^verity: data block 0 \(byte offset 0\) does not match the root hash$/);
    expect(e.details).toMatchObject({ kind: 'data', block: 0 });
  });
});

describe('computeHashTree rejects', () => {
  it('a data size that is not a positive multiple of 4096, and a bad hash offset', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'f');
    await writeRandom(file, 4);
    const salt = randomBytes(32);
    for (const dataSize of [B + 1, 3 * B - 1, 0]) {
      await expectTiuError(withFile(file, (fh) => computeHashTree(fh, { dataSize, hashOffset: 4 * B, salt })), 'INPUT_INVALID', /data size .* is not a positive multiple of 4096/);
    }
    await expectTiuError(withFile(file, (fh) => computeHashTree(fh, { dataSize: 4 * B, hashOffset: 2 * B, salt })), 'INPUT_INVALID', /hash offset/);
    await expectTiuError(withFile(file, (fh) => computeHashTree(fh, { dataSize: 4 * B, hashOffset: 4 * B + 1, salt })), 'INPUT_INVALID', /hash offset/);
    await expectTiuError(withFile(file, (fh) => computeHashTree(fh, { dataSize: 4 * B, hashOffset: 4 * B, salt: Buffer.alloc(257) })), 'INPUT_INVALID', /salt/);
    expect((await stat(file)).size).toBe(4 * B); // nothing written
  });
});

describe('BlockHasher.digestAll (digests written as latin1 strings)', () => {
  it('equals sha256(salt || block) for every block, into a Buffer or a Uint8Array view, at an offset', async () => {
    const { createHash } = await import('node:crypto');
    const { createBlockHasher } = await import('../src/tiu/verity/hash.ts');
    const salt = randomBytes(32);
    const blocks = 512; // 16 KiB of digests: every byte value appears many times over
    const data = randomBytes(blocks * B);
    const want = Buffer.concat(Array.from({ length: blocks }, (_, i) => createHash('sha256').update(salt).update(data.subarray(i * B, (i + 1) * B)).digest()));
    const seen = new Set(want);
    expect(seen.size).toBe(256);
    const h = createBlockHasher(salt, B);
    const out = Buffer.alloc(32 + blocks * 32, 0xee);
    h.digestAll(data, out, 32);
    expect(out.subarray(0, 32).every((b) => b === 0xee)).toBe(true);
    expect(out.subarray(32).equals(want)).toBe(true);
    // A Uint8Array view into a larger buffer (as the workers' digest lists arrive).
    const backing = new ArrayBuffer(64 + blocks * 32);
    const view = new Uint8Array(backing, 64, blocks * 32);
    h.digestAll(data, view);
    expect(Buffer.from(view).equals(want)).toBe(true);
    expect(new Uint8Array(backing, 0, 64).every((b) => b === 0)).toBe(true);
    expect(h.digest(data.subarray(0, B)).equals(want.subarray(0, 32))).toBe(true);
  });
});
