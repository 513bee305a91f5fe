/**
 * PEM text -> DER blocks (pure, strict).
 *
 * Text outside `-----BEGIN/END-----` lines is ignored (CA bundles often carry `subject=` lines
 * or comments), but a block must be well-formed: matching labels, base64 only, no headers.
 */

export interface PemBlock {
  /** The label, e.g. `CERTIFICATE`, `PRIVATE KEY`. */
  type: string;
  der: Buffer;
}

const BEGIN = /^-----BEGIN ([A-Z0-9 ]+)-----$/;
const END = /^-----END ([A-Z0-9 ]+)-----$/;

/** Splits PEM text into its blocks. Returns a problem string instead of throwing. */
export function parsePem(text: string): { blocks: PemBlock[] } | { problem: string } {
  const blocks: PemBlock[] = [];
  let open: { type: string; lines: string[]; line: number } | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const begin = BEGIN.exec(line);
    const end = END.exec(line);
    if (!open) {
      if (begin) open = { type: begin[1]!, lines: [], line: i + 1 };
      else if (end) return { problem: `line ${i + 1}: END ${end[1]} without BEGIN` };
      continue;
    }
    if (begin) return { problem: `line ${i + 1}: BEGIN inside the ${open.type} block opened on line ${open.line}` };
    if (end) {
      if (end[1] !== open.type) return { problem: `line ${i + 1}: END ${end[1]} closes BEGIN ${open.type}` };
      const b64 = open.lines.join('');
      if (b64.length === 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) {
        return { problem: `the ${open.type} block on line ${open.line} is not valid base64` };
      }
      blocks.push({ type: open.type, der: Buffer.from(b64, 'base64') });
      open = undefined;
      continue;
    }
    // Encrypted PEM (Proc-Type/DEK-Info headers) lands here: reported by the caller's type check.
    if (line.includes(':')) return { problem: `the ${open.type} block on line ${open.line} has headers (${line.split(':')[0]}); is it encrypted?` };
    open.lines.push(line);
  }
  if (open) return { problem: `the ${open.type} block on line ${open.line} has no END line` };
  return { blocks };
}

/** True if the bytes look like DER (a SEQUENCE) rather than text: to suggest a conversion. */
export function looksLikeDer(text: string): boolean {
  return text.charCodeAt(0) === 0x30 && /[\x00-\x08\x7f-\uffff]/.test(text.slice(0, 64));
}
