/** End-to-end scenarios on a UEFI (OVMF) VM booting with systemd-boot; see vm/lib/suite.ts, docs/vm.md. */
import { inject } from 'vitest';
import { defineVmSuite } from './lib/suite.ts';
import { scenariosFor, todoFor } from './lib/select.ts';

defineVmSuite({ variant: 'uefi', scenarios: scenariosFor('uefi'), todo: todoFor(inject('bootMode')) });
