/**
 * Repository keys: ed25519 key pairs in PEM files, one per TUF role, kept in a key directory
 * apart from the served tree. Root and targets keys are meant to live offline (only `tiu repo
 * init/rotate-key` need root, only `tiu publish/promote` need targets); snapshot and timestamp
 * keys are the online keys `tiu repo refresh` uses. ed25519 signatures are deterministic, so the
 * same metadata signed twice is the same bytes.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { canonicalize } from '@tufjs/canonical-json';
import { Key, Signature } from '@tufjs/models';
import { TiuError } from '../../core/errors.ts';
import { writeAtomic } from './files.ts';

export const ROLES = ['root', 'targets', 'snapshot', 'timestamp'] as const;
export type Role = (typeof ROLES)[number];

export interface RoleKey {
  role: Role;
  private: KeyObject;
  key: Key;
}

/** The TUF key (public part) of a private key; keyid = sha256 of its canonical JSON (python-tuf's rule). */
export function tufKey(priv: KeyObject): Key {
  const jwk = createPublicKey(priv).export({ format: 'jwk' });
  const pub = Buffer.from(jwk.x!, 'base64url').toString('hex');
  const body = { keytype: 'ed25519', scheme: 'ed25519', keyval: { public: pub } };
  const keyID = createHash('sha256').update(canonicalize(body)).digest('hex');
  return new Key({ keyID, keyType: 'ed25519', scheme: 'ed25519', keyVal: { public: pub } });
}

/** A signer for Metadata.sign(). */
export function signer(k: RoleKey): (data: Buffer) => Signature {
  return (data) => new Signature({ keyID: k.key.keyID, sig: sign(null, data, k.private).toString('hex') });
}

/**
 * The key file of a role: `<role>.key.pem`; further root keys (a root with several keys and a
 * threshold) are `root-2.key.pem`, `root-3.key.pem`, … (`n` ≥ 2).
 */
export function keyFile(keysDir: string, role: Role, n = 1): string {
  return join(keysDir, n === 1 ? `${role}.key.pem` : `${role}-${n}.key.pem`);
}

/** Makes a new ed25519 key for `role` (its `n`th) and writes it (mode 0600), replacing any old one. */
export async function newRoleKey(keysDir: string, role: Role, n = 1): Promise<RoleKey> {
  const { privateKey } = generateKeyPairSync('ed25519');
  await writeAtomic(keyFile(keysDir, role, n), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
  return { role, private: privateKey, key: tufKey(privateKey) };
}

/**
 * Every root key present in `keysDir` (root.key.pem, root-2.key.pem, …): the holders of offline
 * root keys may bring only some of them; whoever signs a root needs at least the threshold.
 */
export async function loadRootKeys(keysDir: string): Promise<{ n: number; key: RoleKey }[]> {
  const names = await readdir(keysDir).catch(() => [] as string[]);
  const ns = names.map((f) => (f === 'root.key.pem' ? 1 : Number(/^root-([2-9]|[1-9]\d)\.key\.pem$/.exec(f)?.[1]))).filter((n) => n > 0).sort((a, b) => a - b);
  const out: { n: number; key: RoleKey }[] = [];
  for (const n of ns) out.push({ n, key: await loadRoleKey(keysDir, 'root', n) });
  return out;
}

/** Loads the key of `role`; REPO_INVALID naming the file when it is missing or not an ed25519 key. */
export async function loadRoleKey(keysDir: string, role: Role, n = 1): Promise<RoleKey> {
  const file = keyFile(keysDir, role, n);
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch {
    throw new TiuError('REPO_INVALID', `the ${role} key ${file} is not there`, { hint: role === 'root' || role === 'targets' ? 'this operation needs the offline key: bring it (--keys DIR)' : 'pass the key directory with --keys DIR' });
  }
  let priv: KeyObject;
  try {
    priv = createPrivateKey(pem);
  } catch (e) {
    throw new TiuError('REPO_INVALID', `${file} is not a private key: ${(e as Error).message}`);
  }
  if (priv.asymmetricKeyType !== 'ed25519') throw new TiuError('REPO_INVALID', `${file} is a ${priv.asymmetricKeyType} key, tiu repositories use ed25519`);
  return { role, private: priv, key: tufKey(priv) };
}
