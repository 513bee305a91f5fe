/** The command line as a user meets it: help, usage errors, exit codes, one-line errors, --debug. */
import { describe, it, expect } from 'vitest';
import { mkdtemp, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from './helpers/device.ts';
import { applyIni, loadConfig, DEFAULT_CONFIG } from '../src/tiu/config.ts';
import { splitGlobals } from '../src/tiu/cli.ts';
import { ERROR_CODES } from '../src/core/errors.ts';
import { parse } from 'ini';

describe('tiu CLI', () => {
  it('prints help with an example for every command', async () => {
    const r = await cli(['--help']);
    expect(r.exitCode).toBe(0);
    const commands = ['keygen', 'create', 'info', 'verify', 'install', 'extract', 'update', 'status', 'rollback', 'cleanup', 'pin', 'unpin', 'etc', 'delta'];
    for (const c of commands) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    for (const c of commands.filter((c) => c !== 'etc')) {
      const h = await cli([c, '--help']);
      expect(h.exitCode, c).toBe(0);
      expect(h.stdout, c).toMatch(/\nExample:\n  tiu |\nExample:\n  [A-Z_]+=\S+ tiu |\nExample:\n  mkfs/);
    }
  });

  it('keeps create --version apart from the global --version', async () => {
    expect((await cli(['--version'])).stdout).toMatch(/^tiu \d+\.\d+\.\d+/);
    const r = await cli(['create', '/nonexistent-tree', '-o', '/tmp/x.tiu', '--key', '/nonexistent.pem', '--cert', '/nonexistent.pem', '--compatible', 'a', '--version', '1.0']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/^tiu: error: cannot read signing key \/nonexistent\.pem: no such file or directory; check the path \[INPUT_NOT_FOUND\]$/);
    expect(splitGlobals(['create', 'x', '--debug', '--version', '2', '-q', '--config', 'c'])).toEqual({ globals: { debug: true, quiet: true, config: 'c' }, rest: ['create', 'x', '--version', '2'] });
  });

  it('usage errors exit 2 with one line; unknown commands too', async () => {
    let r = await cli(['status', '--bogus']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/unknown option '--bogus'/);
    r = await cli(['frobnicate']);
    expect(r.exitCode).toBe(2);
    r = await cli(['rollback', 'abc', '--root', '/']);
    expect([2, 30]).toContain(r.exitCode);
    r = await cli(['update', '--root', '/tmp', '--limit-rate', 'fast', '--source', 'x']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/\[USAGE\]$/m);
  });

  it('errors are one line without a stack trace; --debug adds the trace', async () => {
    const r = await cli(['info', '/nonexistent.tiu', '--keyring', '/nonexistent.pem']);
    expect(r.exitCode).toBe(21);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const d = await cli(['info', '/nonexistent.tiu', '--keyring', '/nonexistent.pem', '--debug']);
    expect(d.exitCode).toBe(21);
    expect(d.stderr).toMatch(/\n\s+at /);
  });

  it('has distinct exit codes per error code', () => {
    const exits = Object.values(ERROR_CODES).map((c) => c.exit);
    expect(new Set(exits).size).toBe(exits.length);
    expect(exits.every((e) => e >= 2 && e <= 125)).toBe(true);
  });
});

describe('configuration', () => {
  it('layers vendor, admin, drop-ins and --config key by key; rejects unknown keys', async () => {
    const root = await mkdtemp(join(tmpdir(), 'tiu-conf-'));
    try {
      await mkdir(join(root, 'usr/lib/tiu/tiu.conf.d'), { recursive: true });
      await mkdir(join(root, 'etc/tiu/tiu.conf.d'), { recursive: true });
      await writeFile(join(root, 'usr/lib/tiu/tiu.conf'), '[device]\ncompatible = vendor\nbootloader = grub2\n[cleanup]\nkeep = 3\n');
      await writeFile(join(root, 'usr/lib/tiu/tiu.conf.d/10-x.conf'), '[cleanup]\nkeep = 4\n');
      await writeFile(join(root, 'etc/tiu/tiu.conf'), '[device]\ncompatible = admin\n');
      await writeFile(join(root, 'etc/tiu/tiu.conf.d/50-a.conf'), '[trust]\nallowed_signers[] = tiu signing, 2026\nallowed_signers[] = CN=b,O=x\n');
      await writeFile(join(root, 'etc/tiu/tiu.conf.d/60-b.conf'), '[cleanup]\nkeep = 6\n');
      await writeFile(join(root, 'extra.conf'), '[update]\nsource = https://example.invalid/x.tiu\n');
      const c = await loadConfig({ configRoot: root, file: join(root, 'extra.conf') });
      expect(c.compatible).toBe('admin');
      expect(c.bootloader).toBe('grub2');
      expect(c.keep).toBe(6);
      expect(c.allowedSigners).toEqual(['tiu signing, 2026', 'CN=b,O=x']);
      expect(c.source).toBe('https://example.invalid/x.tiu');
      expect(c.keyring).toBe(join(root, 'etc/tiu/keyring.pem'));
      expect(c.files).toHaveLength(6);
      await writeFile(join(root, 'etc/tiu/tiu.conf.d/70-typo.conf'), '[device]\ncompatibel = x\n');
      await expect(loadConfig({ configRoot: root })).rejects.toThrow(/unknown setting 'device.compatibel'/);
      const r = await cli(['status', '--root', '/'], { env: { TIU_CONFIG_ROOT: root } });
      expect(r.exitCode).toBe(5);
      expect(r.stderr).toMatch(/\[CONFIG_INVALID\]/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('validates values', () => {
    expect(() => applyIni(DEFAULT_CONFIG, parse('[cleanup]\nkeep = many\n'), 'f')).toThrow(/keep must be a whole number/);
    expect(() => applyIni(DEFAULT_CONFIG, parse('[device]\nbootloader = lilo\n'), 'f')).toThrow(/one of auto, grub2, systemd-boot, none/);
    expect(() => applyIni(DEFAULT_CONFIG, parse('keep = 1\n'), 'f')).toThrow(/inside a \[section\]/);
  });
});
