/**
 * The update service on D-Bus (dbus-next): name `org.tiu.Updater1`, object `/org/tiu/Updater1`,
 * interface `org.tiu.Updater1` (docs/dbus.md has the introspection XML). Methods map onto the
 * {@link Updater}; progress is published as properties with PropertiesChanged signals. Who may
 * call what is the bus's policy (dbus/org.tiu.Updater1.conf: Apply only for root), so the
 * service needs no credential checks of its own.
 */
import dbus from 'dbus-next';
import { TiuError } from '../../core/errors.ts';
import type { Updater, UpdaterStatus } from './updater.ts';

export const BUS_NAME = 'org.tiu.Updater1';
export const OBJECT_PATH = '/org/tiu/Updater1';
export const INTERFACE = 'org.tiu.Updater1';

const { Interface } = dbus.interface;
const { Variant, DBusError } = dbus;

/** D-Bus error names: org.tiu.Updater1.Error.<TiuError code>. */
function toDBusError(e: unknown): Error {
  if (e instanceof TiuError) return new DBusError(`${INTERFACE}.Error.${e.code}`, e.oneLine());
  return new DBusError(`${INTERFACE}.Error.INTERNAL`, String((e as Error)?.message ?? e));
}

async function wrap<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toDBusError(e);
  }
}

const PROPS: Record<keyof UpdaterStatus, { name: string; sig: string }> = {
  state: { name: 'State', sig: 's' },
  source: { name: 'Source', sig: 's' },
  downloaded: { name: 'Downloaded', sig: 't' },
  total: { name: 'Total', sig: 't' },
  error: { name: 'Error', sig: 's' },
  snapshot: { name: 'Snapshot', sig: 'u' },
};

function wire(key: keyof UpdaterStatus, v: UpdaterStatus[keyof UpdaterStatus]): unknown {
  return PROPS[key].sig === 't' ? BigInt(v as number) : v;
}

/** The exported object; `changed()` turns updater changes into PropertiesChanged. */
export class UpdaterInterface extends Interface {
  private readonly u: Updater;

  constructor(u: Updater) {
    super(INTERFACE);
    this.u = u;
  }

  changed(patch: Partial<UpdaterStatus>): void {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(patch)) if (k in PROPS) out[PROPS[k as keyof UpdaterStatus].name] = wire(k as keyof UpdaterStatus, v);
    if (Object.keys(out).length) Interface.emitPropertiesChanged(this, out, []);
  }

  get State() { return this.u.status.state; }
  get Source() { return this.u.status.source; }
  get Root() { return this.u.root; }
  get Downloaded() { return BigInt(this.u.status.downloaded); }
  get Total() { return BigInt(this.u.status.total); }
  get Error() { return this.u.status.error; }
  get Snapshot() { return this.u.status.snapshot; }

  CheckForUpdate() { return wrap(() => this.u.check()); }
  Download() { return wrap(() => this.u.startDownload()); }
  Pause() { return wrap(() => this.u.pause()); }
  Resume() { return wrap(() => this.u.resume()); }
  Cancel() { return wrap(() => this.u.cancel()); }
  Apply() { return wrap(() => this.u.apply()); }
  Status() {
    const s = this.u.status;
    const out: Record<string, InstanceType<typeof Variant>> = {};
    for (const k of Object.keys(PROPS) as (keyof UpdaterStatus)[]) out[PROPS[k].name] = new Variant(PROPS[k].sig, wire(k, s[k]));
    return out;
  }
}

const read = (signature: string) => ({ signature, access: dbus.interface.ACCESS_READ as 'read' });
UpdaterInterface.configureMembers({
  // The status properties from the one table above (names and signatures), plus the root.
  properties: { ...Object.fromEntries(Object.values(PROPS).map((p) => [p.name, read(p.sig)])), Root: read('s') },
  methods: {
    CheckForUpdate: { inSignature: '', outSignature: 'b' },
    Download: { inSignature: '', outSignature: '' },
    Pause: { inSignature: '', outSignature: '' },
    Resume: { inSignature: '', outSignature: '' },
    Cancel: { inSignature: '', outSignature: '' },
    Apply: { inSignature: '', outSignature: 'u' },
    Status: { inSignature: '', outSignature: 'a{sv}' },
  },
});

/**
 * Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS, else the standard socket), exports the
 * object and takes the name. Throws BUSY when another process owns the name.
 */
export async function serve(u: Updater, iface: UpdaterInterface): Promise<{ bus: dbus.MessageBus } & AsyncDisposable> {
  const bus = dbus.systemBus();
  bus.export(OBJECT_PATH, iface);
  const reply = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
  if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
    bus.disconnect();
    throw new TiuError('BUSY', `the D-Bus name ${BUS_NAME} is taken (another tiu daemon runs)`);
  }
  return { bus, [Symbol.asyncDispose]: async () => bus.disconnect() };
}

/**
 * Whether NetworkManager says the connection is metered (Metered: 1 yes, 3 guess-yes).
 * Without NetworkManager on the bus: not metered.
 */
export async function isMetered(bus: dbus.MessageBus): Promise<boolean> {
  try {
    const nm = await bus.getProxyObject('org.freedesktop.NetworkManager', '/org/freedesktop/NetworkManager');
    const props = nm.getInterface('org.freedesktop.DBus.Properties');
    const v = await props.Get!('org.freedesktop.NetworkManager', 'Metered');
    return v.value === 1 || v.value === 3;
  } catch {
    return false;
  }
}
