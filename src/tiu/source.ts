/**
 * What an update source names (`--source`, `[update] source`): an http(s) URL to download, or a
 * local archive file. Pure; rejects other URL schemes before anything is fetched or opened, so
 * `ftp://…` is not reported as a missing file.
 */
import { TiuError } from '../core/errors.ts';

export type Source = { kind: 'url'; url: string } | { kind: 'file'; path: string };

/** Schemes tiu downloads from (curl does the transfer; TLS for https). */
export const SOURCE_SCHEMES = ['https', 'http'] as const;

/** Classifies `text`; throws USAGE for a URL with a scheme tiu does not download from. */
export function parseSource(text: string): Source {
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text)?.[1];
  if (scheme === undefined) return { kind: 'file', path: text };
  const lower = scheme.toLowerCase();
  if (!(SOURCE_SCHEMES as readonly string[]).includes(lower)) {
    throw new TiuError('USAGE', `unsupported URL scheme '${scheme}' in update source ${text}`, { hint: `tiu downloads over ${SOURCE_SCHEMES.join(' or ')}; or give the path of a downloaded archive` });
  }
  return { kind: 'url', url: text };
}
