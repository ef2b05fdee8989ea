// sidebar/Code.gs against the real backend (tests/sidebar/backend.py: the emulator, the fake
// Meta and create_app on loopback), end to end: what the contract fake stands in for in
// code.test.js, for real. Needs the backend side of docs/http-api.md.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BACKEND_URL, OPS, SALES, getJson, makeWorld, startBackend, wholePass } = require('./helpers/world');

let backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  if (backend) await backend.stop();
});

function setUp() {
  const world = makeWorld(backend);
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, authMode: 'secret', secret: backend.secret }]);
  assert.equal(saved.error, null, 'saving good settings connects');
  world.run(OPS, 'installTriggers');
  return world;
}

function rows() {
  return getJson(backend.sheets_url + '/_emulator/data').spreadsheets[backend.spreadsheet_id].sheets[backend.tab];
}

function cell(row, header) {
  const all = rows();
  const v = all[row - 1][all[0].indexOf(header)];
  return v === undefined ? '' : v;
}

function metaEvents() {
  return getJson(backend.meta_url + '/_fake/events').events;
}

function calls(world, since) {
  return world.state.fetches.slice(since).filter((f) => f.url.startsWith(BACKEND_URL));
}

test('a status edit is one /api/edits call; Meta gets the event once, timed by the stamp', () => {
  const world = setUp();
  wholePass(world, OPS); // what the sheet held before goes out first
  const statusCol = rows()[0].indexOf('Lead Status') + 1;
  const metaBefore = metaEvents().length;
  const since = world.state.fetches.length;

  world.userTypes(SALES, backend.tab, 2, statusCol, 'MQL');

  const made = calls(world, since);
  assert.deepEqual(made.map((c) => [new URL(c.url).pathname, c.status]), [['/api/edits', 200]]);
  assert.deepEqual(JSON.parse(made[0].body).changed, [2]);
  const stamp = cell(2, 'Status Changed At');
  assert.equal(stamp, JSON.parse(made[0].params.payload).at);
  const sent = metaEvents().slice(metaBefore);
  assert.deepEqual(sent.map((e) => [e.event_name, e.event_time]), [['QualifiedLead', Math.floor(Date.parse(stamp) / 1000)]]);

  // The same status pasted again (no values in the event): one call, nothing changes.
  const again = world.state.fetches.length;
  world.userPastes(SALES, backend.tab, 2, statusCol, [['MQL'], [cell(3, 'Lead Status')]]);
  assert.deepEqual(JSON.parse(calls(world, again)[0].body).changed, []);
  assert.equal(cell(2, 'Status Changed At'), stamp, 'not restamped');
  assert.equal(metaEvents().length, metaBefore + 1);
});

test('the hourly trigger starts a pass without waiting, and Sync now follows it to its summary', () => {
  const world = setUp();
  const since = world.state.fetches.length;
  world.fireClock();
  const [hourly] = calls(world, since);
  assert.ok([200, 202].includes(hourly.status), hourly.body);
  assert.deepEqual(JSON.parse(hourly.params.payload), { spreadsheet_id: backend.spreadsheet_id, tab: backend.tab, trigger: 'hourly', wait: 0 });

  // Sync now (the secret is the saver's own: ops@ saved it) follows whichever pass runs.
  const summary = wholePass(world, OPS);
  assert.equal(typeof summary.rows_total, 'number');
});

test('Sync now from the menu counts every row once, baselines too: its counts add up to the rows read', () => {
  const world = setUp();

  world.run(OPS, 'menuSyncNow');

  const toast = world.state.toasts.at(-1).message;
  const counts = toast.split('Rows: ')[1].split('. ')[0].split(' · ');
  assert.deepEqual(counts.map((c) => c.replace(/ \d+$/, '')).filter((k) => k !== 'pending'),
    ['sent', 'up to date', 'expired', 'baseline', 'invalid', 'skipped', 'failed'], toast);
  const total = counts.reduce((n, c) => n + Number(c.match(/\d+$/)[0]), 0);
  assert.equal(total, rows().length - 1, toast);
});
