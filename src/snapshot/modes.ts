/**
 * The snapshot store's settings, apart from the store itself: the configuration (loaded by every
 * command) needs them, and importing them from store.ts pulled the store's XML and snapper code
 * into every command's start-up.
 */

/** `[device] snapper` in tiu.conf: which metadata backend the store uses. */
export type SnapperMode = 'auto' | 'yes' | 'no';

/** Every valid {@link SnapperMode}. */
export const SNAPPER_MODES: readonly SnapperMode[] = ['auto', 'yes', 'no'];

/** The snapper configuration tiu uses (`/etc/snapper/configs/root`, snapper's `-c root`). */
export const SNAPPER_CONFIG = 'root';
