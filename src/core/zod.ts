/**
 * zod as tiu uses it: every schema module imports `z` from here, so the setting below holds
 * before any of them parses.
 *
 * `jitless`: zod compiles an object schema into a function (`new Function`) the first time it
 * parses with it. tiu parses each schema a handful of times per run (a manifest, a delta header,
 * repository metadata), where compiling costs more than it saves: the first parse of a manifest
 * took ~7.5 ms compiled and ~3 ms interpreted, later ones ~0.5 ms either way. The checks are the
 * same, and zod then makes no code from strings. The bench's `tiu check` (a 2,000-target
 * repository) took 0.19 s with it, 0.22 s in the run before.
 */
import { z } from 'zod';

z.config({ jitless: true });

export { z };
