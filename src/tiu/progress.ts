/**
 * Progress for long steps: a cli-progress bar on a terminal, occasional log lines otherwise
 * (CI logs, timers), nothing when disabled or quiet.
 */
import type { Context } from './context.ts';

export interface Progress {
  update: (phase: string, fraction: number) => void;
  done: () => void;
}

/** A progress reporter for `ctx` (cli-progress, and the readline it loads, only on a terminal). */
export async function createProgress(ctx: Context, enabled = true): Promise<Progress> {
  if (!enabled || !ctx.log.enabled('info')) return { update: () => {}, done: () => {} };
  if (process.stderr.isTTY) {
    const { default: cliProgress } = await import('cli-progress');
    const bar = new cliProgress.SingleBar(
      { format: '{phase} [{bar}] {percentage}%', stream: process.stderr, hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(phase, fraction) {
        if (!started) {
          bar.start(100, 0, { phase: phase.padEnd(9) });
          started = true;
        }
        bar.update(Math.round(Math.min(1, Math.max(0, fraction)) * 100), { phase: phase.padEnd(9) });
      },
      done: () => started && bar.stop(),
    };
  }
  // Off a terminal (logs, timers): a line every 5 s, only for steps that take that long.
  let last = '';
  let lastAt = Date.now();
  return {
    update(phase, fraction) {
      const now = Date.now();
      if (phase !== last) {
        last = phase;
        lastAt = now;
      } else if (now - lastAt > 5000) {
        ctx.log.info(`${phase}: ${Math.round(fraction * 100)}%`);
        lastAt = now;
      }
    },
    done: () => {},
  };
}
