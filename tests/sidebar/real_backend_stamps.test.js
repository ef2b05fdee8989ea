// sidebar/Code.gs against the real backend with edits that settle (tests/sidebar/backend.py,
// settle_seconds 60): a mis-click changed back before it settled is withdrawn, and the Status
// Changed At the add-on stamped at the mis-click is put back as it was (docs/edits.md, "A
// withdrawn change leaves no time behind"), so no pass dates anything by it.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BACKEND_URL, OPS, SALES, getJson, makeWorld, startBackend, wholePass } = require('./helpers/world');

let backend;

before(async () => {
  backend = await startBackend(60);
});

after(async () => {
  if (backend) await backend.stop();
});

function rows() {
  return getJson(backend.sheets_url + '/_emulator/data').spreadsheets[backend.spreadsheet_id].sheets[backend.tab];
}

function col(header) {
  return rows()[0].indexOf(header) + 1;
}

function cell(row, header) {
  const v = rows()[row - 1][col(header) - 1];
  return v === undefined ? '' : v;
}

function metaEvents() {
  return getJson(backend.meta_url + '/_fake/events').events;
}

function install(world) {
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, authMode: 'secret', secret: backend.secret }]);
  assert.equal(saved.error, null, 'saving good settings connects');
  world.run(OPS, 'installTriggers');
}

/** A person types `status` into a row's status cell: the edit's request body and its answer. */
function typesStatus(world, row, status) {
  const since = world.state.fetches.length;
  world.userTypes(SALES, backend.tab, row, col('Lead Status'), status);
  const [edit] = world.state.fetches.slice(since).filter((f) => f.url.startsWith(BACKEND_URL));
  assert.equal(edit.status, 200, edit.body);
  return { sent: JSON.parse(edit.params.payload), answer: JSON.parse(edit.body) };
}

test('an imported lead mis-clicked and changed back is blank again, and the next sync dates nothing by the mis-click', () => {
  const world = makeWorld(backend);
  // An imported lead, 20 days old, no Status Changed At, pasted before the triggers existed.
  const header = rows()[0];
  const created = new Date(Date.now() - 20 * 86400000).toISOString().slice(0, 19) + 'Z';
  const values = { 'Created At': created, 'First Name': 'Imported', Email: 'imported@example.com', Country: 'IN', 'Lead Status': 'New' };
  const row = rows().length + 1;
  world.userPastes(SALES, backend.tab, row, 1, [header.map((h) => (values[h] === undefined ? '' : values[h]))]);
  install(world);

  const click = typesStatus(world, row, 'Customer');
  assert.deepEqual(click.answer.changed, [row]);
  assert.equal(click.sent.rows[0].status_changed_at, '');
  assert.equal(cell(row, 'Status Changed At'), click.sent.at, 'stamped at the mis-click');
  const back = typesStatus(world, row, 'New');

  assert.deepEqual(back.answer.withdrawn, [row]);
  assert.deepEqual(back.answer.restore.map((r) => [r.row, r.status_changed_at]), [[row, '']]);
  assert.equal(cell(row, 'Status Changed At'), '', 'blank again');
  const summary = wholePass(world, OPS);
  const misClick = Math.floor(Date.parse(click.sent.at) / 1000);
  assert.deepEqual(metaEvents().filter((e) => e.event_time === misClick), [], 'nothing dated at the mis-click');
  assert.equal(typeof summary.events_sent, 'number');
  assert.equal(cell(row, 'Status Changed At'), '');
});

test('a synced lead mis-clicked and changed back keeps the Status Changed At it had; Meta gets nothing', () => {
  const world = makeWorld(backend);
  install(world);
  wholePass(world, OPS); // every lead known, its Lead sent
  const stamp = cell(3, 'Status Changed At');
  assert.notEqual(stamp, '');
  const metaBefore = metaEvents().length;

  typesStatus(world, 3, 'Customer');
  assert.notEqual(cell(3, 'Status Changed At'), stamp, 'stamped at the mis-click');
  const back = typesStatus(world, 3, 'New');

  assert.deepEqual(back.answer.restore.map((r) => [r.row, r.status_changed_at]), [[3, stamp]]);
  assert.equal(cell(3, 'Status Changed At'), stamp);
  wholePass(world, OPS);
  assert.equal(metaEvents().length, metaBefore);
});
