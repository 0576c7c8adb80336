// src/abi/xen.ts against Xen's own public headers: a C program built with <xen/xen.h> and
// <xen/grant_table.h> prints the values, and every constant we copied must match.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import * as abi from '../src/abi/xen.ts';
import { compileAndReadValues, gccMissing } from './helpers-c.ts';
import { stopIfMissing } from './helpers-tools.ts';
import type { Missing } from './helpers-tools.ts';

function headersMissing(): Missing | undefined {
  const missing = gccMissing();
  if (missing !== undefined) return missing;
  for (const h of ['/usr/include/xen/xen.h', '/usr/include/xen/grant_table.h']) {
    if (!fs.existsSync(h)) return { what: `${h} absent`, install: 'apt-get install libxen-dev' };
  }
  return undefined;
}

test("abi/xen.ts holds the values of Xen's public headers", (t) => {
  if (stopIfMissing(t, headersMissing())) return;
  const gntst = Object.keys(abi.GNTST);
  const lines = ['DOMID_FIRST_RESERVED', 'DOMID_SELF', 'GNTCOPY_source_gref', 'GNTCOPY_dest_gref', ...gntst.map((name) => `GNTST_${name}`)].map(
    (name) => `  printf("${name} %ld\\n", (long)(${name}));`,
  );
  const source = [
    '#include <stdio.h>',
    '#include <stdint.h>',
    '#include <xen/xen.h>',
    '#include <xen/grant_table.h>',
    'int main(void) {',
    ...lines,
    // The widths our range checks assume: domid_t u16, grant_ref_t u32.
    '  printf("domid_t_bytes %ld\\n", (long)sizeof(domid_t));',
    '  printf("grant_ref_t_bytes %ld\\n", (long)sizeof(grant_ref_t));',
    '  return 0;',
    '}',
    '',
  ].join('\n');
  const dir = fs.mkdtempSync(join(os.tmpdir(), 'abi-xen-'));
  try {
    const file = join(dir, 'values.c');
    fs.writeFileSync(file, source);
    const c = compileAndReadValues(file);
    assert.equal(c['DOMID_FIRST_RESERVED'], abi.DOMID_FIRST_RESERVED);
    assert.equal(c['DOMID_SELF'], abi.DOMID_SELF);
    assert.equal(abi.DOMID_MAX, c['DOMID_FIRST_RESERVED']! - 1);
    assert.equal(c['GNTCOPY_source_gref'], abi.GNTCOPY_source_gref);
    assert.equal(c['GNTCOPY_dest_gref'], abi.GNTCOPY_dest_gref);
    for (const [name, value] of Object.entries(abi.GNTST)) assert.equal(c[`GNTST_${name}`], value, `GNTST_${name}`);
    assert.equal(c['domid_t_bytes'], 2);
    assert.equal(c['grant_ref_t_bytes'], 4);
    assert.equal(abi.GRANT_REF_LIMIT, 2 ** (8 * c['grant_ref_t_bytes']!));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the page size every layer uses is the ABI one', async () => {
  const { PAGE_SIZE } = await import('../src/hypervisor/types.ts');
  const { XEN_PAGE_SIZE } = await import('../src/blkif/constants.ts');
  assert.equal(abi.XEN_PAGE_SIZE, 2 ** abi.XEN_PAGE_SHIFT);
  assert.equal(PAGE_SIZE, abi.XEN_PAGE_SIZE);
  assert.equal(XEN_PAGE_SIZE, abi.XEN_PAGE_SIZE);
});
