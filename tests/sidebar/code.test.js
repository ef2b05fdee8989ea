// sidebar/Code.gs under Node: the real file, per person, over the Apps Script stand-in, talking
// real HTTP to the contract fake backend (tests/sidebar/fake_backend.py) on loopback. Each
// test named "finding N" pins one numbered finding of issue 13 and fails on the Code.gs of
// before it (run with SHEET_BRIDGE_CODE_GS=/path/to/old/Code.gs to see).
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');
const { AppsScriptLocal, BACKEND_URL, CODE_GS, OPS, REPO, SALES, getJson, makeWorld, postJson, sheetView } = require('./helpers/world');

// The fake's seconds (a pass's length, `wait`) and UrlFetch's 60-s deadline, played 50× faster.
const SCALE = 0.02;
const ISO_WITH_OFFSET = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$/;
const TOKENS = { [OPS]: 'id-token-of-ops', [SALES]: 'id-token-of-sales' };
const USERS = { [OPS]: { identityToken: TOKENS[OPS] }, [SALES]: { identityToken: TOKENS[SALES] } };
let fake;

before(async () => {
  fake = await startFakeBackend();
});

after(async () => {
  if (fake) await fake.stop();
});

beforeEach(() => {
  postJson(fake.backend_url + '/_fake/reset'); // the seeded sheet back, the ledger as it says
});

function startFakeBackend() {
  return require('./helpers/world').startFake(SCALE, TOKENS);
}

/** A spreadsheet where ops@ saved the settings (Google sign-in, the default) and installed
 * the triggers. */
function setUp(options = {}) {
  const world = makeWorld(fake, { users: options.users || USERS });
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, ...(options.settings || {}) }]);
  assert.equal(saved.error, null, 'saving good settings connects');
  assert.equal(saved.tab, fake.tab);
  world.run(OPS, 'installTriggers');
  return world;
}

const { rows, col, cell } = sheetView(() => fake);

function stamps() {
  const c = col('Status Changed At') - 1;
  const k = col('CAPI Key') - 1;
  const out = {};
  rows().slice(1).forEach((r) => {
    out[r[k]] = r[c];
  });
  return out; // by lead: a sort moves rows, not stamps
}

function requests() {
  return getJson(fake.backend_url + '/_fake/requests').requests;
}

function transitions() {
  return getJson(fake.backend_url + '/_fake/transitions').transitions;
}

function backendCalls(world, since) {
  return world.state.fetches.slice(since).filter((f) => f.url.startsWith(BACKEND_URL));
}

function described(calls) {
  return calls.map((c) => c.method + ' ' + new URL(c.url).pathname);
}

/** A value from Code.gs's vm context as a plain value of this one (deepEqual compares realms). */
function plain(value) {
  return JSON.parse(JSON.stringify(value));
}

function changedStamps(before, after) {
  return Object.keys(after).filter((k) => after[k] !== before[k]);
}

// ---- edits ---------------------------------------------------------------------------------

test('a one-cell status edit posts that row with its CAPI Key once, as the installer, and stamps the time', () => {
  const world = setUp();
  const key = cell(5, 'CAPI Key');
  const before = cell(5, 'Lead Status');
  assert.notEqual(before, 'Customer');
  const since = world.state.fetches.length;
  const stampsBefore = stamps();
  const started = Date.now();

  world.userTypes(SALES, fake.tab, 5, col('Lead Status'), 'Customer');

  const calls = backendCalls(world, since);
  assert.deepEqual(described(calls), ['POST /api/edits']);
  const [edit] = calls;
  assert.equal(edit.status, 200, edit.body);
  assert.equal(edit.user, OPS, 'the trigger runs as the person who installed it');
  assert.equal(edit.params.headers.Authorization, 'Bearer ' + TOKENS[OPS]);
  const body = JSON.parse(edit.params.payload);
  // The status it replaced goes too (Apps Script gives e.oldValue for a one-cell edit only):
  // https://developers.google.com/apps-script/guides/triggers/events#edit
  // And its Status Changed At as it was, before this edit stamps it (what a change back puts back).
  assert.deepEqual(body.rows, [{ row: 5, status: 'Customer', key, old_status: before, status_changed_at: stampsBefore[key] }]);
  assert.equal(body.spreadsheet_id, fake.spreadsheet_id);
  assert.equal(body.tab, fake.tab);
  assert.match(body.at, ISO_WITH_OFFSET);
  assert.ok(Math.abs(Date.parse(body.at) - started) < 120000, 'stamped with the edit time');
  assert.equal(cell(5, 'Status Changed At'), body.at, 'the stamp in the row is the time sent');
  assert.deepEqual(changedStamps(stampsBefore, stamps()), [key], 'no other row stamped');
  assert.deepEqual(world.state.toasts, [], 'a good edit raises no toast');
});

/** A person types `status` into a row's status cell: the edit's request body and its answer. */
function typesStatus(world, row, status) {
  const since = world.state.fetches.length;
  world.userTypes(SALES, fake.tab, row, col('Lead Status'), status);
  const [edit] = backendCalls(world, since);
  return { sent: JSON.parse(edit.params.payload), answer: JSON.parse(edit.body) };
}

test('a mis-click changed back before it settled gets its Status Changed At back, as it was', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/settle', { seconds: 60 });
  const key = cell(5, 'CAPI Key');
  const status = cell(5, 'Lead Status');
  const stamp = cell(5, 'Status Changed At');
  assert.notEqual(stamp, '');

  const click = typesStatus(world, 5, 'Customer');
  assert.equal(click.sent.rows[0].status_changed_at, stamp, 'the stamp as it was goes with the edit');
  assert.equal(cell(5, 'Status Changed At'), click.sent.at, 'stamped at the mis-click');
  const back = typesStatus(world, 5, status);

  assert.deepEqual(plain(back.answer.withdrawn), [5]);
  assert.deepEqual(
    plain(back.answer.restore).map((r) => [r.row, r.lead_key, r.status_changed_at]),
    [[5, key, stamp]]
  );
  assert.equal(cell(5, 'Status Changed At'), stamp, 'the stamp of before the mis-click, back');
  assert.equal(cell(5, 'CAPI Key'), key);
});

test('a never-synced lead (no key, no stamp) mis-clicked and changed back has a blank Status Changed At again', () => {
  const width = rows()[0].length;
  const world = makeWorld(fake, { users: USERS });
  // An imported lead: no CAPI Key, no Status Changed At (pasted before the triggers existed).
  const line = rows()[40].map((v, i) => (i === col('CAPI Key') - 1 || i === col('Status Changed At') - 1 ? '' : v));
  line[col('Email') - 1] = 'imported@example.com';
  line[col('Lead Status') - 1] = 'New';
  world.userPastes(SALES, fake.tab, 42, 1, [Array.from({ length: width }, (_, i) => (line[i] === undefined ? '' : line[i]))]);
  world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL }]);
  world.run(OPS, 'installTriggers');
  postJson(fake.backend_url + '/_fake/settle', { seconds: 60 });

  const click = typesStatus(world, 42, 'Customer');
  assert.deepEqual(plain(click.sent.rows), [{ row: 42, status: 'Customer', key: null, old_status: 'New', status_changed_at: '' }]);
  assert.equal(cell(42, 'Status Changed At'), click.sent.at, 'stamped at the mis-click');
  const back = typesStatus(world, 42, 'New');

  assert.deepEqual(plain(back.answer.restore).map((r) => [r.row, r.status_changed_at]), [[42, '']]);
  assert.equal(cell(42, 'Status Changed At'), '', 'blank again: no time for the next sync to take');
});

test('a date cell in Status Changed At goes as the text the backend reads the same way, and comes back so', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/settle', { seconds: 60 });
  // Typed dates become date cells (getValues gives a Date); a date without a time of day is
  // "some time that day" to the backend, so it goes as a date, not as midnight.
  world.userTypes(SALES, fake.tab, 9, col('Status Changed At'), '2026-11-20');
  world.userTypes(SALES, fake.tab, 10, col('Status Changed At'), '2026-11-20 10:15');
  assert.equal(typeof cell(9, 'Status Changed At'), 'number', 'a date cell (a serial number)');
  const statuses = [cell(9, 'Lead Status'), cell(10, 'Lead Status')];

  const day = typesStatus(world, 9, 'Customer');
  const time = typesStatus(world, 10, 'Customer');
  assert.equal(day.sent.rows[0].status_changed_at, '2026-11-20');
  assert.equal(time.sent.rows[0].status_changed_at, '2026-11-20T10:15:00+05:30');
  typesStatus(world, 9, statuses[0]);
  typesStatus(world, 10, statuses[1]);

  assert.equal(cell(9, 'Status Changed At'), '2026-11-20');
  assert.equal(cell(10, 'Status Changed At'), '2026-11-20T10:15:00+05:30');
});

test('a Status Changed At someone typed after the mis-click is not put back', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/settle', { seconds: 60 });
  const status = cell(7, 'Lead Status');

  typesStatus(world, 7, 'Customer');
  world.userTypes(SALES, fake.tab, 7, col('Status Changed At'), '2026-01-05 09:30');
  const typed = cell(7, 'Status Changed At');
  const back = typesStatus(world, 7, status);

  assert.equal(plain(back.answer.restore).length, 1, 'the backend says what was there');
  assert.equal(cell(7, 'Status Changed At'), typed, 'what the person typed stays');
});

test('finding 1: a paste of 30 rows is one backend call, and only rows whose status changed get a stamp', () => {
  const world = setUp();
  const width = rows()[0].length;
  const block = rows().slice(1, 31).map((r) => Array.from({ length: width }, (_, i) => (r[i] === undefined ? '' : r[i])));
  const statusAt = col('Lead Status') - 1;
  const changed = { 4: 'Customer', 10: 'Disqualified', 20: 'SQL' }; // sheet rows
  Object.keys(changed).forEach((row) => {
    assert.notEqual(block[row - 2][statusAt], changed[row]);
    block[row - 2][statusAt] = changed[row];
  });
  const keys = Object.keys(changed).map((row) => cell(Number(row), 'CAPI Key'));
  const since = world.state.fetches.length;
  const stampsBefore = stamps();

  world.userPastes(SALES, fake.tab, 2, 1, block);

  const calls = backendCalls(world, since);
  assert.deepEqual(described(calls), ['POST /api/edits'], 'one call for the whole paste');
  const sent = JSON.parse(calls[0].params.payload);
  assert.equal(sent.rows.length, 30);
  // A paste carries no old values (e.oldValue is for one-cell edits only): none is invented.
  assert.ok(sent.rows.every((r) => !('old_status' in r)), 'no old_status on a paste');
  assert.deepEqual(JSON.parse(calls[0].body).changed, [4, 10, 20]);
  assert.deepEqual(changedStamps(stampsBefore, stamps()).sort(), [...keys].sort(), 'stamps only where the status changed');
  keys.forEach((k) => assert.equal(stamps()[k], sent.at));
  assert.deepEqual(transitions().map((t) => [t.lead, t.status]), Object.keys(changed).map((row, i) => [keys[i], changed[row]]));
});

test('finding 1: an edit of A2:Z4 that changes no status calls once and stamps nothing', () => {
  const world = setUp();
  const block = rows().slice(1, 4).map((r) => r.slice(0, 26).concat(Array(Math.max(0, 26 - r.length)).fill('')));
  const stampsBefore = stamps();
  const since = world.state.fetches.length;

  world.userPastes(SALES, fake.tab, 2, 1, block);

  assert.deepEqual(described(backendCalls(world, since)), ['POST /api/edits']);
  assert.deepEqual(changedStamps(stampsBefore, stamps()), []);
  assert.deepEqual(transitions(), []);
});

test('finding 1: retyping the same status in one cell calls nothing and stamps nothing', () => {
  const world = setUp();
  const stampsBefore = stamps();
  const since = world.state.fetches.length;

  world.userTypes(SALES, fake.tab, 3, col('Lead Status'), cell(3, 'Lead Status'));

  assert.deepEqual(backendCalls(world, since), []);
  assert.deepEqual(changedStamps(stampsBefore, stamps()), []);
});

test('finding 2: a sort between the edit and the answer records the edited lead, and stamps no other', () => {
  const world = setUp();
  const edited = cell(5, 'CAPI Key');
  const neighbour = cell(6, 'CAPI Key');
  const stampsBefore = stamps();
  postJson(fake.backend_url + '/_fake/swap_on_next_edit', { a: 5, b: 6 });

  world.userTypes(SALES, fake.tab, 5, col('Lead Status'), 'Customer');

  assert.equal(cell(5, 'CAPI Key'), neighbour, 'someone sorted meanwhile');
  assert.deepEqual(transitions().map((t) => [t.lead, t.status]), [[edited, 'Customer']]);
  assert.equal(stamps()[neighbour], stampsBefore[neighbour], 'the lead now in row 5 keeps its stamp');
});

test('finding 2: sorting the sheet is one call with every row and its key; nothing changes', () => {
  const world = setUp();
  const stampsBefore = stamps();
  const since = world.state.fetches.length;

  world.userSorts(SALES, fake.tab, col('Email'), true);

  const calls = backendCalls(world, since);
  assert.deepEqual(described(calls), ['POST /api/edits']);
  const sent = JSON.parse(calls[0].params.payload).rows;
  assert.equal(sent.length, 40);
  assert.ok(sent.every((r) => r.key && r.key === rows()[r.row - 1][col('CAPI Key') - 1]));
  assert.deepEqual(changedStamps(stampsBefore, stamps()), []);
  assert.deepEqual(transitions(), []);
});

test('finding 8: a date cell (getValues gives a Date) goes to the backend as the text the backend reads', () => {
  const world = setUp();
  const since = world.state.fetches.length;
  world.userPastes(SALES, fake.tab, 6, col('Lead Status'), [['2026-12-03 10:15'], ['Customer']]);
  const [call] = backendCalls(world, since);
  assert.deepEqual(
    JSON.parse(call.params.payload).rows.map((r) => r.status),
    ['2026-12-03T10:15:00+05:30', 'Customer'],
  );
});

test('an edit outside the status column, or on another tab, sends nothing and stamps nothing', () => {
  const world = setUp();
  const stampsBefore = stamps();
  const since = world.state.fetches.length;

  world.userTypes(SALES, fake.tab, 3, col('Email'), 'lead02.new@example.com');
  world.userTypes(SALES, 'Notes', 2, col('Lead Status'), 'Customer');

  assert.deepEqual(backendCalls(world, since), []);
  assert.deepEqual(changedStamps(stampsBefore, stamps()), []);
});

test('an unreachable backend: a one-cell change is stamped anyway, a paste stamps nothing', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/faults', { status: 503, count: 2 });
  const stampsBefore = stamps();

  assert.throws(() => world.userTypes(SALES, fake.tab, 7, col('Lead Status'), 'Customer'), /HTTP 503/);
  const toast = world.state.toasts.at(-1);
  assert.match(toast.title, /edit failed/);
  assert.match(toast.message, /1 status change stamped but not sent yet: the next sync sends it/);
  assert.deepEqual(changedStamps(stampsBefore, stamps()), [cell(7, 'CAPI Key')]);

  const block = [[cell(8, 'Lead Status') === 'SQL' ? 'MQL' : 'SQL'], ['Customer']];
  assert.throws(() => world.userPastes(SALES, fake.tab, 8, col('Lead Status'), block), /HTTP 503/);
  assert.match(world.state.toasts.at(-1).message, /2 rows not checked yet, nothing stamped/);
  assert.deepEqual(changedStamps(stampsBefore, stamps()), [cell(7, 'CAPI Key')]);
  assert.match(world.run(SALES, 'getSidebarState').lastError.message, /HTTP 503/);
});

// ---- triggers: one owner per spreadsheet ------------------------------------------------------

test('finding 3: a second editor sees who owns the triggers, and installing adds no second pair', () => {
  const world = setUp();
  const answer = world.run(SALES, 'installTriggers');
  assert.equal(answer.installed, false);
  assert.match(answer.message, /installed by ops@example\.com/);
  assert.deepEqual(world.state.triggers.map((t) => [t.owner, t.spec.handler]).sort(), [
    [OPS, 'handleEdit'],
    [OPS, 'hourlySync'],
  ]);
  const seenBySales = world.run(SALES, 'getSidebarState');
  assert.equal(seenBySales.owner.email, OPS);
  assert.equal(seenBySales.owner.me, false);
  assert.equal(world.run(OPS, 'getSidebarState').owner.me, true);

  const removed = world.run(SALES, 'removeTriggers');
  assert.match(removed.message, /belong to ops@example\.com/);
  assert.equal(world.state.triggers.length, 2, "another person's triggers stay");

  const since = world.state.fetches.length;
  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');
  assert.deepEqual(described(backendCalls(world, since)), ['POST /api/edits'], 'each edit posted once');
});

test("finding 3: taking over moves the triggers; the old owner's stand down without calling the backend", () => {
  const world = setUp();
  const taken = world.run(SALES, 'takeOverTriggers');
  assert.equal(taken.installed, true);
  assert.equal(taken.owner.email, SALES);
  assert.equal(world.state.triggers.length, 4, "nobody can delete another person's triggers");

  const since = world.state.fetches.length;
  world.userTypes(OPS, fake.tab, 4, col('Lead Status'), 'Customer');
  const calls = backendCalls(world, since);
  assert.deepEqual(described(calls), ['POST /api/edits']);
  assert.equal(calls[0].params.headers.Authorization, 'Bearer ' + TOKENS[SALES]);

  world.fireClock();
  assert.deepEqual(described(backendCalls(world, since)), ['POST /api/edits', 'POST /api/sync']);
  assert.deepEqual([...new Set(world.state.triggers.map((t) => t.owner))], [SALES], 'the old pair removed itself');
  assert.equal(world.run(OPS, 'getSidebarState').owner.email, SALES);
});

// ---- credentials ------------------------------------------------------------------------------

test('finding 4: the shared secret lives in its saver\'s User Properties and goes when the mode changes', () => {
  const world = setUp({ settings: { authMode: 'secret', secret: fake.secret } });
  const docValues = Object.values(world.state.documentProperties).join('\n');
  assert.ok(!docValues.includes(fake.secret), 'Document Properties (readable by every editor) hold no secret');
  assert.equal(world.state.userProperties[OPS]['sheetBridge.secret'], fake.secret);
  assert.equal(world.run(SALES, 'getSettings').hasSecret, false);
  // Each person signs in their own way: sales@ uses Google sign-in until they choose the secret.
  assert.equal(world.run(SALES, 'getSidebarState').error, null);
  world.state.userProperties[SALES]['sheetBridge.authMode'] = 'secret';
  assert.match(world.run(SALES, 'getSidebarState').error, /no secret is stored for sales@example\.com/);

  const since = world.state.fetches.length;
  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');
  assert.equal(backendCalls(world, since)[0].params.headers.Authorization, 'Bearer ' + fake.secret, "the installer's secret");

  world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL, authMode: 'id_token' }]);
  assert.equal(world.state.userProperties[OPS]['sheetBridge.secret'], undefined);
});

test('finding 4: with no identity token the words say so, and "Bearer null" is never sent', () => {
  const world = makeWorld(fake, { users: { [OPS]: { identityToken: null } } });
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL }]);
  assert.equal(saved.settings.authMode, 'id_token', 'Google sign-in is the default');
  assert.match(saved.error, /Google sign-in gave no identity token for ops@example\.com: .*openid and userinfo\.email/);
  assert.throws(() => world.run(OPS, 'syncNow'), /no identity token/);
  assert.ok(requests().every((r) => !/^Bearer (null|undefined)?$/.test(r.authorization)), 'nothing sent without a token');
});

// ---- locks ------------------------------------------------------------------------------------

test('finding 5: reads and edits take no lock; with it held elsewhere the sidebar opens and edits go out', () => {
  const world = setUp();
  const release = world.holdLock(); // e.g. a pass started from the add-on a moment ago
  try {
    const state = world.run(SALES, 'getSidebarState');
    assert.equal(state.error, null);
    assert.equal(state.status.tab, fake.tab);
    const since = world.state.fetches.length;
    world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');
    assert.deepEqual(described(backendCalls(world, since)), ['POST /api/edits']);
    assert.deepEqual(world.state.lockWaits, [], 'nothing waited for the lock');
  } finally {
    release();
  }
});

// ---- passes -----------------------------------------------------------------------------------

async function follow(world, user, passId) {
  const seen = [];
  for (let i = 0; i < 400; i++) {
    const pass = world.run(user, 'getPass', [passId]);
    seen.push(pass);
    if (pass.state !== 'running') return seen;
    await sleep(20);
  }
  throw new Error('the pass never ended');
}

test('finding 6: a pass longer than UrlFetch\'s deadline shows progress, then the summary and attention rows 50 at a time', async () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/pass', { seconds: 90, total: 1200, attention: 75 });

  const started = world.run(SALES, 'syncNow');
  assert.equal(started.state, 'running');
  assert.match(started.pass_id, /^p-/);
  assert.equal(started.total, 1200);
  const seen = await follow(world, SALES, started.pass_id);

  const sending = seen.filter((p) => p.phase === 'send' && p.done > 0 && p.done < p.total);
  assert.ok(sending.length >= 2, 'progress while sending: ' + JSON.stringify(seen.map((p) => [p.phase, p.done])));
  const done = seen.at(-1);
  assert.equal(done.state, 'done');
  assert.equal(done.summary.attention_total, 75);
  assert.equal(done.summary.rows.length, 50);
  assert.equal(done.summary.next_rows_offset, 50);
  const more = world.run(SALES, 'getPass', [started.pass_id, 50]);
  assert.deepEqual(plain(more.summary.rows.map((r) => r.row)), Array.from({ length: 25 }, (_, i) => 52 + i));
  const calls = backendCalls(world, 0);
  assert.ok(calls.every((c) => !c.error), 'no call ran into the deadline: ' + calls.map((c) => c.error).filter(Boolean));
});

test('finding 6: the hourly trigger starts a pass and does not wait for it', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/pass', { seconds: 90, total: 100 });
  const since = world.state.fetches.length;

  world.fireClock();

  const calls = backendCalls(world, since);
  assert.deepEqual(
    calls.map((c) => [c.method, new URL(c.url).pathname, c.status, JSON.parse(c.params.payload)]),
    [['POST', '/api/sync', 202, { spreadsheet_id: fake.spreadsheet_id, tab: fake.tab, trigger: 'hourly', wait: 0 }]],
  );
});

test('finding 5 and 6: a pass already running (409) is information for Sync now, the hourly trigger and edits', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/pass', { seconds: 90, total: 100 });
  const first = world.run(OPS, 'syncNow');
  assert.equal(first.state, 'running');

  const second = world.run(SALES, 'syncNow');
  assert.equal(second.state, 'running');
  assert.equal(second.pass_id, first.pass_id);
  assert.match(second.info, /already running; following it/);

  world.fireClock(); // no throw: nothing failed
  world.userTypes(SALES, fake.tab, 4, col('Lead Status'), 'Customer');
  assert.match(world.state.toasts.at(-1).message, /a sync is running/);
  assert.equal(world.run(SALES, 'getSidebarState').lastError, null);
});

test('the sidebar state carries the backend\'s alerts and running pass for every editor', () => {
  const world = setUp();
  const alert = { code: 'token_rejected', severity: 'error', message: 'Meta rejected the access token (190).', fix: 'Generate a new token.' };
  postJson(fake.backend_url + '/_fake/alerts', { alerts: [alert] });
  postJson(fake.backend_url + '/_fake/pass', { seconds: 90, total: 100 });
  const pass = world.run(OPS, 'syncNow');
  const state = world.run(SALES, 'getSidebarState');
  assert.deepEqual(plain(state.status.alerts), [alert]);
  assert.equal(state.status.running_pass.pass_id, pass.pass_id);
});

// ---- failures in words --------------------------------------------------------------------

test('a refused account (403) and a backend crash (500) reach the user in words', () => {
  const world = setUp();
  postJson(fake.backend_url + '/_fake/faults', { status: 500, count: 1 });
  world.run(SALES, 'menuSyncNow');
  const toast = world.state.toasts.at(-1);
  assert.match(toast.title, /Sync now failed/);
  assert.match(toast.message, /backend failed: unexpected error; see the server log \(internal, HTTP 500\)/);

  postJson(fake.backend_url + '/_fake/faults', { status: 500, count: 1 });
  assert.throws(() => world.fireClock(), /HTTP 500/, 'the hourly failure is not swallowed');
  assert.match(world.run(SALES, 'getSidebarState').lastError.message, /HTTP 500/);
  postJson(fake.backend_url + '/_fake/pass', { seconds: 0.01, total: 3 });
  assert.equal(world.run(SALES, 'syncNow').state, 'done');
  assert.equal(world.run(SALES, 'getSidebarState').lastError, null, 'a good pass clears it');

  const stranger = makeWorld(fake, { users: { 'eve@example.org': { identityToken: 'not-known' } } });
  const saved = stranger.run('eve@example.org', 'saveSettings', [{ backendUrl: BACKEND_URL }]);
  assert.match(saved.error, /refused the credentials: invalid credentials \(unauthorized, HTTP 401\)/);
});

test('an unreachable or non-https backend is named with what to check', () => {
  // The allowed prefix served by nothing: a backend that is down.
  const world = makeWorld(fake, { users: USERS, routes: { [BACKEND_URL + '/']: 'http://127.0.0.1:9/' } });
  assert.throws(() => world.run(OPS, 'saveSettings', [{ backendUrl: 'http://127.0.0.1:9' }]), /must start with https:\/\//);
  const saved = world.run(OPS, 'saveSettings', [{ backendUrl: BACKEND_URL }]);
  assert.match(saved.error, /Could not reach the sheet-bridge backend at https:\/\/sheet-bridge\.example\.com \(Address unavailable: /);
  const outside = world.run(OPS, 'saveSettings', [{ backendUrl: 'https://bridge.other.example' }]);
  assert.match(outside.error, /not under a urlFetchWhitelist prefix/);
});

// ---- the menu and the files -------------------------------------------------------------------

test('finding 7: the menu reads "sheet-bridge" in a bound script, and nothing relies on onInstall', () => {
  const world = makeWorld(fake, { users: USERS });
  world.run(SALES, 'onOpen', [{ authMode: 'LIMITED' }]);
  const [menu] = world.state.menus;
  assert.equal(menu.title, 'sheet-bridge');
  assert.deepEqual(menu.items.map((i) => i.caption), ['Open sidebar', 'Sync now', 'Install triggers', 'Remove triggers']);
  assert.ok(!AppsScriptLocal.functionNames(CODE_GS).includes('onInstall'), 'onInstall runs only for a published add-on');
  assert.doesNotMatch(CODE_GS, /\.createAddonMenu\(/);
});

test('the sidebar calls only public functions that Code.gs defines', () => {
  const html = fs.readFileSync(path.join(REPO, 'sidebar', 'Sidebar.html'), 'utf8');
  const defined = new Set(AppsScriptLocal.functionNames(CODE_GS));
  const called = [...html.matchAll(/server\('([A-Za-z_$][\w$]*)'/g)].map((m) => m[1]);
  assert.ok(called.length >= 8, 'found the calls: ' + called);
  for (const name of called) {
    assert.ok(defined.has(name), name + ' is defined in Code.gs');
    assert.ok(!name.endsWith('_'), name + ' is not private');
  }
  // Every other route to the server would bypass that check.
  assert.equal(html.match(/google\.script\.run/g).length, 1);
});

test('Code.gs only forwards: no hashing, stage names or window arithmetic', () => {
  assert.doesNotMatch(CODE_GS, /computeDigest|sha256|QualifiedLead|Purchase|7 \* 24|604800/i);
});

test('the manifest asks for the least scopes, runs V8 and lists the backend prefix', () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(REPO, 'appsscript.json'), 'utf8'));
  assert.equal(manifest.runtimeVersion, 'V8');
  assert.deepEqual(manifest.oauthScopes.slice().sort(), [
    'https://www.googleapis.com/auth/script.container.ui',
    'https://www.googleapis.com/auth/script.external_request',
    'https://www.googleapis.com/auth/script.scriptapp',
    'https://www.googleapis.com/auth/spreadsheets.currentonly',
    'https://www.googleapis.com/auth/userinfo.email',
    'openid',
  ]);
  assert.deepEqual(manifest.urlFetchWhitelist, [BACKEND_URL + '/']);
  const pushed = fs.readFileSync(path.join(REPO, '.claspignore'), 'utf8').split('\n').filter((l) => l.startsWith('!'));
  assert.deepEqual(pushed, ['!appsscript.json', '!sidebar/Code.gs', '!sidebar/Sidebar.html']);
  // clasp names a pushed file by its path: Code.gs must open the sidebar by that name.
  assert.match(CODE_GS, /createHtmlOutputFromFile\('sidebar\/Sidebar'\)/);
});
