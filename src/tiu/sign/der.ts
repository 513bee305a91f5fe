/**
 * DER structure check (pure): definite, minimal lengths that exactly fill their parents.
 *
 * asn1js parses BER leniently (a constructed value whose children overrun its declared length
 * is accepted), which would let bytes outside the signed parts be changed without effect.
 * tiu accepts one encoding per structure: this walks the raw TLVs before anything else reads
 * them. Primitive contents are not interpreted here.
 */

const MAX_DEPTH = 64;

/** Returns undefined if `bytes` is exactly one well-formed DER TLV tree, else the problem. */
export function derProblem(bytes: Uint8Array): string | undefined {
  let problem: string | undefined;

  // Returns the end offset of the TLV at `pos`, or -1 (setting `problem`).
  function tlv(pos: number, limit: number, depth: number): number {
    if (depth > MAX_DEPTH) return fail(pos, 'nested too deeply');
    if (pos >= limit) return fail(pos, 'missing tag');
    const tag = bytes[pos]!;
    let p = pos + 1;
    if ((tag & 0x1f) === 0x1f) {
      // High tag number: base-128, no leading 0x80, at most 4 bytes.
      if (p >= limit || bytes[p] === 0x80) return fail(pos, 'bad tag');
      let n = 0;
      while (p < limit && bytes[p]! & 0x80) {
        if (++n > 3) return fail(pos, 'tag too long');
        p++;
      }
      if (p >= limit) return fail(pos, 'truncated tag');
      p++;
    }
    if (p >= limit) return fail(pos, 'missing length');
    const first = bytes[p++]!;
    let len: number;
    if (first < 0x80) len = first;
    else if (first === 0x80) return fail(pos, 'indefinite length (BER, not DER)');
    else {
      const n = first & 0x7f;
      if (n > 4 || p + n > limit) return fail(pos, 'bad length');
      if (bytes[p] === 0) return fail(pos, 'non-minimal length');
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + bytes[p++]!;
      if (len < 0x80) return fail(pos, 'non-minimal length');
    }
    const end = p + len;
    if (end > limit) return fail(pos, 'length runs past its container');
    if (tag & 0x20) {
      let q = p;
      while (q < end) {
        q = tlv(q, end, depth + 1);
        if (q < 0) return -1;
      }
    }
    return end;
  }

  function fail(pos: number, what: string): number {
    problem ??= `${what} at offset ${pos}`;
    return -1;
  }

  const end = tlv(0, bytes.byteLength, 0);
  if (end < 0) return problem;
  if (end !== bytes.byteLength) return `${bytes.byteLength - end} bytes after the end`;
  return undefined;
}
