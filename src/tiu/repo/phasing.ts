/**
 * Phased rollouts: a device takes an image only if its bucket (0-99) is below the image's
 * phased percentage on its channel. Pure.
 *
 * The bucket is a stable hash of the machine id and the image version, as Ubuntu's
 * system-image does it: the same device stays in or out for one version (raising the
 * percentage only adds devices), and each version picks a different first slice of the fleet.
 * Cloned images share /etc/machine-id and therefore a bucket.
 */
import { createHash } from 'node:crypto';

/** The device's bucket 0-99 for `version`. */
export function phaseBucket(machineId: string, version: string): number {
  const d = createHash('sha256').update(`tiu-phase\0${machineId.trim()}\0${version}`).digest();
  return d.readUInt32BE(0) % 100;
}

/** Whether a device in `bucket` may take an image phased at `percentage` (0-100). */
export function admitted(bucket: number, percentage: number): boolean {
  return bucket < percentage;
}
