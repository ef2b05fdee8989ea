// sidebar/Code.gs type-checked against Apps Script's published typings
// (@types/google-apps-script, pinned in package.json): a call to a method Apps Script does not
// have, or an argument of the wrong type, fails here before it fails in a user's sheet. Our own
// stand-in (apps_script_local.js) only knows what Code.gs calls; the typings know the rest.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { typecheck, describe } = require('./helpers/typecheck');

const ROOT = path.resolve(__dirname, '..', '..');

test('sidebar/Code.gs type-checks against @types/google-apps-script with zero errors', () => {
  const found = typecheck([path.join(ROOT, 'sidebar', 'Code.gs')]);
  assert.deepEqual(found.map(describe), []);
});

test('a method Apps Script lacks, a wrong argument type and a DOM global are caught', () => {
  const found = typecheck([path.join(__dirname, 'fixtures', 'wrong_calls.gs')]);
  const lines = found.map((d) => d.line);
  assert.ok(found.some((d) => d.code === 'TS2551' && /getRangee/.test(d.message)), found.map(describe).join('\n'));
  assert.ok(lines.includes(6), 'setNumberFormat(42): ' + found.map(describe).join('\n'));
  assert.ok(lines.includes(7), "method: 'push': " + found.map(describe).join('\n'));
  assert.ok(lines.includes(8), 'document: ' + found.map(describe).join('\n'));
  assert.ok(found.every((d) => d.file === path.join('tests', 'sidebar', 'fixtures', 'wrong_calls.gs')));
});
