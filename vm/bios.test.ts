/** End-to-end scenarios on a BIOS (SeaBIOS) VM booting with GRUB2; see vm/lib/suite.ts, docs/vm.md. */
import { inject } from 'vitest';
import { defineVmSuite } from './lib/suite.ts';
import { scenariosFor, todoFor } from './lib/select.ts';

defineVmSuite({ variant: 'bios', scenarios: scenariosFor('bios'), todo: todoFor(inject('bootMode')) });
