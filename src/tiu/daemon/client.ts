/**
 * The update service as a client sees it: whether `tiu daemon` runs on the system bus, and its
 * state and progress. Never starts the service (NameHasOwner, no activation), and gives up
 * quietly when there is no bus: `tiu update` works the same without a daemon.
 */
import dbus from 'dbus-next';
import { BUS_NAME, INTERFACE, OBJECT_PATH } from './dbus.ts';

export interface DaemonView {
  state: string;
  root: string;
  source: string;
  downloaded: number;
  total: number;
  error: string;
  snapshot: number;
}

export interface DaemonClient {
  read(): Promise<DaemonView>;
  close(): void;
}

/** The running daemon, or undefined (no system bus, nobody owns the name, or no answer in time). */
export async function connectDaemon(debug: (line: string) => void = () => {}, timeoutMs = 2000): Promise<DaemonClient | undefined> {
  let bus: dbus.MessageBus;
  try {
    bus = dbus.systemBus();
  } catch (e) {
    debug(`no system bus: ${(e as Error).message}`);
    return undefined;
  }
  let timer: NodeJS.Timeout | undefined;
  const giveUp = new Promise<undefined>((resolve) => {
    bus.on('error', (e: Error) => {
      debug(`system bus: ${e.message}`);
      resolve(undefined);
    });
    timer = setTimeout(() => {
      debug(`system bus: no answer within ${timeoutMs} ms`);
      resolve(undefined);
    }, timeoutMs);
  });
  const probe = (async (): Promise<DaemonClient | undefined> => {
    const bd = await bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus');
    if (!(await bd.getInterface('org.freedesktop.DBus').NameHasOwner!(BUS_NAME))) {
      debug(`no tiu daemon on the system bus`);
      return undefined;
    }
    const obj = await bus.getProxyObject(BUS_NAME, OBJECT_PATH);
    const props = obj.getInterface('org.freedesktop.DBus.Properties');
    return {
      async read() {
        const all = (await props.GetAll!(INTERFACE)) as Record<string, { value: unknown }>;
        const v = (k: string) => all[k]?.value;
        return {
          state: String(v('State') ?? ''), root: String(v('Root') ?? ''), source: String(v('Source') ?? ''),
          downloaded: Number(v('Downloaded') ?? 0), total: Number(v('Total') ?? 0), error: String(v('Error') ?? ''), snapshot: Number(v('Snapshot') ?? 0),
        };
      },
      close: () => bus.disconnect(),
    };
  })().catch((e: unknown) => {
    debug(`tiu daemon on the system bus: ${(e as Error).message}`);
    return undefined;
  });
  const r = await Promise.race([probe, giveUp]);
  clearTimeout(timer);
  if (!r) bus.disconnect();
  return r;
}
