// sidebar/Code.gs in a spreadsheet several people edit (issue 20, item 5), over the Apps Script
// stand-in and the contract fake backend: how the owner's triggers sign in is the owner's, a
// cleared status is never stamped, rows without a CAPI Key are found by their cells, and every
// list handed to the sidebar through google.script.run is capped. Installable triggers run as
// the person who installed them: https://developers.google.com/apps-script/guides/triggers/installable
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { BACKEND_URL, OPS, SALES, makeWorld, postJson, sheetView, startFake } = require('./helpers/world');

const SCALE = 0.02;
const TOKENS = { [OPS]: 'id-token-of-ops', [SALES]: 'id-token-of-sales' };
const USERS = { [OPS]: { identityToken: TOKENS[OPS] }, [SALES]: { identityToken: TOKENS[SALES] } };
let fake;

before(async () => {
  fake = await startFake(SCALE, TOKENS);
});

after(async () => {
  if (fake) await fake.stop();
});

beforeEach(() => {
  postJson(fake.backend_url + '/_fake/reset');
});

/** ops@ saves the settings (Google sign-in unless `settings` say otherwise); `beforeInstall`
 * runs before ops@ installs the triggers. */
function setUp({ settings = {}, beforeInstall } = {}) {
  const world = makeWorld(fake, { users: USERS });
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, ...settings }]);
  assert.equal(saved.error, null, 'saving good settings connects');
  if (beforeInstall) beforeInstall(world);
  world.run(OPS, 'installTriggers');
  return world;
}

const { rows, col, cell } = sheetView(() => fake);

function editCalls(world, since) {
  return world.state.fetches.slice(since).filter((f) => f.url === BACKEND_URL + '/api/edits');
}

test("another editor's Save never changes how the owner's triggers sign in", () => {
  const world = setUp(); // ops@: Google sign-in
  const saved = world.run(SALES, 'saveSettings', [{ backendUrl: BACKEND_URL, authMode: 'secret', secret: fake.secret }]);
  assert.equal(saved.error, null, "sales@'s own sidebar signs in with the secret");
  assert.equal(saved.settings.authMode, 'secret');
  assert.equal(world.run(OPS, 'getSettings').authMode, 'id_token', "ops@'s own choice stands");

  const since = world.state.fetches.length;
  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');

  const [call] = editCalls(world, since);
  assert.ok(call, 'the edit reached the backend');
  assert.equal(call.user, OPS);
  assert.equal(call.params.headers.Authorization, 'Bearer ' + TOKENS[OPS], "the owner's Google sign-in");
  assert.equal(call.status, 200, call.body);
  const owner = world.run(SALES, 'getSidebarState').owner;
  assert.deepEqual([owner.email, owner.authMode], [OPS, 'id_token'], 'everyone sees how the triggers sign in');
  assert.equal(world.state.documentProperties['sheetBridge.authMode'], undefined, 'no mode any editor can change for all');
});

test('the owner switching sign-in mode moves their triggers with them', () => {
  const world = setUp();
  world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, authMode: 'secret', secret: fake.secret }]);
  const since = world.state.fetches.length;
  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');
  assert.equal(editCalls(world, since)[0].params.headers.Authorization, 'Bearer ' + fake.secret);
});

test('clearing a status cell is never stamped', () => {
  const world = setUp();
  const before = cell(4, 'Status Changed At');
  const since = world.state.fetches.length;

  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), '');

  const [call] = editCalls(world, since);
  assert.deepEqual(JSON.parse(call.body).changed, [4], 'the backend hears of it (and decides)');
  assert.equal(cell(4, 'Status Changed At'), before, 'no status is no stage to date');
});

test('a row without a CAPI Key is stamped by its cells, not its row number: a sort meanwhile stamps no other lead', () => {
  const world = setUp({
    beforeInstall: (w) => w.userPastes(OPS, fake.tab, 5, col('CAPI Key'), [['']]), // never synced
  });
  const neighbour = cell(6, 'CAPI Key');
  const neighbourStamp = cell(6, 'Status Changed At');
  postJson(fake.backend_url + '/_fake/swap_on_next_edit', { a: 5, b: 6 });

  world.userTypes(SALES, fake.tab, 5, col('Lead Status'), 'Customer');

  assert.equal(cell(5, 'CAPI Key'), neighbour, 'someone sorted meanwhile');
  assert.equal(cell(5, 'Status Changed At'), neighbourStamp, 'the lead now in row 5 keeps its stamp');
  assert.equal(cell(6, 'Lead Status'), 'Customer', 'the edited lead is in row 6 now');
});

test('a row without a CAPI Key that stayed put is stamped', () => {
  const world = setUp({ beforeInstall: (w) => w.userPastes(OPS, fake.tab, 7, col('CAPI Key'), [['']]) });
  const before = cell(7, 'Status Changed At');
  world.userTypes(SALES, fake.tab, 7, col('Lead Status'), 'Customer');
  assert.notEqual(cell(7, 'Status Changed At'), before);
  assert.match(String(cell(7, 'Status Changed At')), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$/);
});

test('every list the sidebar gets through google.script.run is capped, with its total', () => {
  const world = setUp();
  const nearing = Array.from({ length: 3000 }, (_, i) => ({ row: i + 2, event_name: 'Schedule', hours_left: 3 }));
  const warnings = Array.from({ length: 400 }, (_, i) => 'warning ' + i);
  postJson(fake.backend_url + '/_fake/status', { nearing_window: nearing, warnings });

  const state = world.run(SALES, 'getSidebarState');

  assert.equal(state.error, null);
  assert.equal(state.status.nearing_window.length, 50);
  assert.equal(state.status.nearing_window_total, 3000);
  assert.equal(state.status.warnings.length, 50);
  assert.equal(state.status.warnings_total, 400);
  assert.ok(JSON.stringify(state).length < 20000, 'the answer stays small');
});
