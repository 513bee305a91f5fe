/**
 * A private "system bus" for the daemon tests: dbus-daemon on a unix socket in the test's work
 * dir, with the shape of Debian's /usr/share/dbus-1/system.conf and tiu's policy file
 * (dbus/org.tiu.Updater1.conf) included, so the policy is what a device enforces.
 */
import { join } from 'node:path';
import { stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';

const POLICY = join(import.meta.dirname, '../../dbus/org.tiu.Updater1.conf');

/** The bus configuration; `extraPolicy` is inserted before tiu's policy (e.g. a stand-in service's). */
export function systemBusConfig(socket: string, extraPolicy = ''): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
${extraPolicy}  <include>${POLICY}</include>
</busconfig>
`;
}

/** Starts the bus in `work` (socket `work/bus`) and waits for its socket; returns the daemon and its address. */
export async function startPrivateBus(work: string, extraPolicy = ''): Promise<{ daemon: ResultPromise; address: string }> {
  const socket = join(work, 'bus');
  await writeFile(join(work, 'bus.conf'), systemBusConfig(socket, extraPolicy));
  const daemon = execa('dbus-daemon', [`--config-file=${join(work, 'bus.conf')}`, '--nofork', '--nopidfile'], { reject: false });
  for (let i = 0; i < 100 && !(await stat(socket).catch(() => undefined)); i++) await sleep(50);
  return { daemon, address: `unix:path=${socket}` };
}
