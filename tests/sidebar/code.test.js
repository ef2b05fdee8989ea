// sidebar/Code.gs under Node: the real file in a vm context over the Apps Script stand-in,
// talking real HTTP to the real backend (tests/sidebar/backend.py) on loopback.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { AppsScriptLocal, CODE_GS, REPO, startBackend, loadCodeGs, getJson, postJson } = require('./helpers/world');

const ISO_WITH_OFFSET = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$/;
let backend;

before(async () => {
  backend = await startBackend();
});

after(async () => {
  if (backend) await backend.stop();
});

function configured(options) {
  const world = loadCodeGs(backend, options);
  const result = world.code.saveSettings({ backendUrl: backend.backend_url, authMode: 'secret', secret: backend.secret });
  assert.equal(result.error, null, 'saving good settings connects');
  assert.equal(result.tab, backend.tab);
  return world;
}

function sheet() {
  const data = getJson(backend.sheets_url + '/_emulator/data');
  return data.spreadsheets[backend.spreadsheet_id].sheets;
}

function cell(tab, row, header) {
  const rows = sheet()[tab];
  const col = rows[0].indexOf(header);
  assert.notEqual(col, -1, header + ' is a column');
  return rows[row - 1][col] === undefined ? '' : rows[row - 1][col];
}

function column(header) {
  return sheet()[backend.tab][0].indexOf(header) + 1;
}

function metaEvents() {
  return getJson(backend.meta_url + '/_fake/events').events;
}

function backendCalls(local) {
  return local.state.fetches.filter((f) => f.url.startsWith(backend.backend_url));
}

test('an edit in the status column stamps Status Changed At and posts the change to /api/edits', () => {
  const { code, local } = configured();
  code.installTriggers();
  const statusCol = column('Lead Status');
  const metaBefore = metaEvents().length;
  const callsBefore = backendCalls(local).length;
  const started = Date.now();

  const old = local.userTypes(backend.tab, 2, statusCol, 'MQL');
  assert.equal(old, 'New');
  assert.deepEqual(local.fireEdit(code, backend.tab, 2, statusCol, old, 'MQL'), ['handleEdit']);

  const calls = backendCalls(local).slice(callsBefore);
  assert.deepEqual(calls.map((c) => c.method + ' ' + new URL(c.url).pathname), ['POST /api/edits']);
  const [edit] = calls;
  assert.equal(edit.status, 200, edit.body);
  assert.equal(edit.params.contentType, 'application/json');
  assert.equal(edit.params.muteHttpExceptions, true);
  assert.equal(edit.params.headers.Authorization, 'Bearer ' + backend.secret);
  const body = JSON.parse(edit.params.payload);
  assert.deepEqual(
    { spreadsheet_id: body.spreadsheet_id, tab: body.tab, row: body.row, old_value: body.old_value, new_value: body.new_value },
    { spreadsheet_id: backend.spreadsheet_id, tab: backend.tab, row: 2, old_value: 'New', new_value: 'MQL' },
  );
  assert.match(body.at, ISO_WITH_OFFSET);
  assert.ok(Math.abs(Date.parse(body.at) - started) < 120000, 'stamped with the edit time');

  assert.equal(cell(backend.tab, 2, 'Status Changed At'), body.at, 'the stamp in the row is the one sent');
  assert.match(String(cell(backend.tab, 2, 'CAPI Status')), /QualifiedLead/);
  const sent = metaEvents().slice(metaBefore).map((e) => e.event_name);
  assert.ok(sent.includes('QualifiedLead'), 'Meta received ' + sent);
  assert.deepEqual(local.state.toasts, [], 'a good edit raises no toast');
});

test('an edit outside the status column, or on another tab, sends nothing and stamps nothing', () => {
  const { code, local } = configured();
  code.installTriggers();
  const stampBefore = cell(backend.tab, 3, 'Status Changed At');
  const notesStamp = cell('Notes', 2, 'Status Changed At');
  const metaBefore = metaEvents().length;
  const callsBefore = backendCalls(local).length;

  const emailCol = column('Email');
  const old = local.userTypes(backend.tab, 3, emailCol, 'ravi.k@example.com');
  local.fireEdit(code, backend.tab, 3, emailCol, old, 'ravi.k@example.com');
  const statusCol = column('Lead Status');
  const oldNote = local.userTypes('Notes', 2, statusCol, 'Customer');
  local.fireEdit(code, 'Notes', 2, statusCol, oldNote, 'Customer');

  assert.deepEqual(backendCalls(local).slice(callsBefore), []);
  assert.equal(cell(backend.tab, 3, 'Status Changed At'), stampBefore);
  assert.equal(cell('Notes', 2, 'Status Changed At'), notesStamp);
  assert.equal(metaEvents().length, metaBefore);
});

test('installing triggers twice leaves exactly one onEdit and one hourly trigger', () => {
  const { code, local } = configured();
  const { ScriptApp, SpreadsheetApp } = local.globals;
  // A duplicate left by an older install, and an unrelated trigger that must survive.
  ScriptApp.newTrigger('handleEdit').forSpreadsheet(SpreadsheetApp.getActive()).onEdit().create();
  ScriptApp.newTrigger('someoneElsesReport').timeBased().everyHours(4).create();

  code.installTriggers();
  const counts = code.installTriggers();

  assert.deepEqual(JSON.parse(JSON.stringify(counts)), { onEdit: 1, hourly: 1 });
  const ours = ScriptApp.getProjectTriggers().map((t) => [t.getHandlerFunction(), t.getEventType(), t.spec.everyHours]);
  assert.deepEqual(ours.sort(), [
    ['handleEdit', 'ON_EDIT', undefined],
    ['hourlySync', 'CLOCK', 1],
    ['someoneElsesReport', 'CLOCK', 4],
  ]);

  assert.deepEqual(JSON.parse(JSON.stringify(code.removeTriggers())), { onEdit: 0, hourly: 0 });
  assert.deepEqual(ScriptApp.getProjectTriggers().map((t) => t.getHandlerFunction()), ['someoneElsesReport']);
});

test('the hourly trigger posts a full pass to /api/sync', () => {
  const { code, local } = configured();
  code.installTriggers();
  const callsBefore = backendCalls(local).length;
  assert.deepEqual(local.fireClock(code), ['hourlySync']);
  const hourly = backendCalls(local).slice(callsBefore);
  assert.deepEqual(
    hourly.map((c) => [c.method, new URL(c.url).pathname, c.status, JSON.parse(c.params.payload)]),
    [['POST', '/api/sync', 200, { spreadsheet_id: backend.spreadsheet_id, tab: backend.tab }]],
  );
});

test('a wrong shared secret (401) reaches the user in words', () => {
  const { code, local } = loadCodeGs(backend);
  const saved = code.saveSettings({ backendUrl: backend.backend_url, authMode: 'secret', secret: 'not-the-secret' });
  assert.equal(saved.connected, false);
  assert.match(saved.error, /refused the credentials: invalid credentials \(unauthorized, HTTP 401\)/);
  assert.match(saved.error, /shared secret/);

  code.menuSyncNow();
  const toast = local.state.toasts.at(-1);
  assert.match(toast.title, /Sync now failed/);
  assert.match(toast.message, /HTTP 401/);
  assert.throws(() => code.syncNow(), /refused the credentials/);

  const state = code.getSidebarState();
  assert.match(state.error, /HTTP 401/);
  assert.equal(state.status, null);
});

test('a refused status edit is still stamped, and the refusal is toasted and not swallowed', () => {
  const { code, local } = configured();
  code.installTriggers();
  const saved = code.saveSettings({ backendUrl: backend.backend_url, authMode: 'secret', secret: 'rotated-elsewhere' });
  assert.equal(saved.connected, false);
  const statusCol = column('Lead Status');
  const stampBefore = cell(backend.tab, 4, 'Status Changed At');

  const old = local.userTypes(backend.tab, 4, statusCol, 'SQL');
  assert.throws(() => local.fireEdit(code, backend.tab, 4, statusCol, old, 'SQL'), /HTTP 401/);

  const stamp = cell(backend.tab, 4, 'Status Changed At');
  assert.match(stamp, ISO_WITH_OFFSET);
  assert.notEqual(stamp, stampBefore);
  const toast = local.state.toasts.at(-1);
  assert.match(toast.title, /edit failed/);
  assert.match(toast.message, /refused the credentials.*1 status change stamped but not sent yet: the next sync sends it/);
  assert.match(code.getSidebarState().lastError.message, /HTTP 401/);
});

test('a backend crash (500) reaches the user in words and is kept for the sidebar', () => {
  const { code, local } = configured();
  code.installTriggers();
  assert.equal(postJson(backend.backend_url + '/_test/faults', { status: 500, count: 2 }).status, 200);

  code.menuSyncNow();
  const toast = local.state.toasts.at(-1);
  assert.match(toast.title, /Sync now failed/);
  assert.match(toast.message, /backend failed: unexpected error; see the server log \(internal, HTTP 500\)/);

  assert.throws(() => local.fireClock(code), /HTTP 500/, 'the hourly failure is not swallowed');
  assert.match(code.getSidebarState().lastError.message, /HTTP 500/);
  code.syncNow(); // the fault is spent: a good pass clears the recorded error
  assert.equal(code.getSidebarState().lastError, null);
});

test('an unreachable backend is named with what to check', () => {
  const { code } = loadCodeGs(backend);
  const saved = code.saveSettings({ backendUrl: 'http://127.0.0.1:9', authMode: 'secret', secret: 'x' });
  assert.match(saved.error, /Could not reach the sheet-bridge backend at http:\/\/127\.0\.0\.1:9/);
  assert.throws(() => code.saveSettings({ backendUrl: 'http://example.com' }), /must start with https:\/\//);
});

test('the sidebar calls only public functions that Code.gs defines', () => {
  const html = fs.readFileSync(path.join(REPO, 'sidebar', 'Sidebar.html'), 'utf8');
  const defined = new Set(AppsScriptLocal.functionNames(CODE_GS));
  const called = [...html.matchAll(/server\('([A-Za-z_$][\w$]*)'/g)].map((m) => m[1]);
  assert.ok(called.length >= 6, 'found the calls: ' + called);
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

test('the stand-in formats dates as Apps Script does for the stamp pattern', () => {
  const at = new Date('2026-01-01T00:00:00Z');
  const pattern = "yyyy-MM-dd'T'HH:mm:ssXXX";
  assert.equal(AppsScriptLocal.formatDate(at, 'Asia/Kolkata', pattern), '2026-01-01T05:30:00+05:30');
  assert.equal(AppsScriptLocal.formatDate(at, 'America/New_York', pattern), '2025-12-31T19:00:00-05:00');
  assert.equal(AppsScriptLocal.formatDate(at, 'Etc/UTC', pattern), '2026-01-01T00:00:00Z');
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
  assert.ok(manifest.urlFetchWhitelist.every((p) => /^https:\/\/[^/]+\/$/.test(p)), 'https prefixes ending in /');
  const pushed = fs.readFileSync(path.join(REPO, '.claspignore'), 'utf8').split('\n').filter((l) => l.startsWith('!'));
  assert.deepEqual(pushed, ['!appsscript.json', '!sidebar/Code.gs', '!sidebar/Sidebar.html']);
  // clasp names a pushed file by its path: Code.gs must open the sidebar by that name.
  assert.match(CODE_GS, /createHtmlOutputFromFile\('sidebar\/Sidebar'\)/);
});
