// Finding 8 of issue 13: the Apps Script stand-in (sheet_bridge/local/static/apps_script_local.js)
// is as unkind as Google's documentation says Apps Script is, so Code.gs is not proven only
// against a friendlier copy of itself. A small probe script runs in it as each person.
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const { AppsScriptLocal, BACKEND_URL, MANIFEST, OPS, SALES, getJson, http, postJson, startFake } = require('./helpers/world');

const SCALE = 0.02;
let fake;

// What the probe's functions saw, by the person and event they ran for. It keeps it in each
// person's User Properties: each execution starts with fresh globals.
const PROBE = `
var count = 0;
function note(what) {
  var p = PropertiesService.getUserProperties();
  var seen = JSON.parse(p.getProperty('seen') || '[]');
  seen.push(what);
  p.setProperty('seen', JSON.stringify(seen));
}
function onEditProbe(e) {
  note({ as: Session.getEffectiveUser().getEmail(), editor: e.user.getEmail(), a1: e.range.getA1Notation(),
    hasValue: 'value' in e, hasOldValue: 'oldValue' in e, value: e.value, oldValue: e.oldValue, triggerUid: e.triggerUid });
}
function clockProbe(e) { note({ as: Session.getEffectiveUser().getEmail(), clock: true, triggerUid: e.triggerUid }); }
function bump() { count += 1; return count; }
function lockedEdit(e) {
  note({ edit: 'locked', got: LockService.getDocumentLock().tryLock(10000) });
  UrlFetchApp.fetch('${BACKEND_URL}/_fake/slow?seconds=1', { muteHttpExceptions: true });
  note({ edit: 'done' });
}
function lockingClock(e) { note({ clock: 'locking', got: LockService.getDocumentLock().tryLock(10000) }); }
function slowClock(e) {
  note({ clock: 'ran' });
  UrlFetchApp.fetch('${BACKEND_URL}/_fake/slow?seconds=40', { muteHttpExceptions: true });
}
function locks() {
  return [LockService.getUserLock().tryLock(0), LockService.getScriptLock().tryLock(0), LockService.getDocumentLock().tryLock(0)];
}
function sidebar(name) { return HtmlService.createHtmlOutputFromFile(name).setTitle('t').title; }
function install(handler) {
  if (/^(clockProbe|lockingClock|slowClock)$/.test(handler)) return ScriptApp.newTrigger(handler).timeBased().everyHours(1).create().getUniqueId();
  return ScriptApp.newTrigger(handler).forSpreadsheet(SpreadsheetApp.getActive()).onEdit().create().getUniqueId();
}
function mine() { return ScriptApp.getProjectTriggers().map(function (t) { return t.getUniqueId(); }); }
function seenSoFar() { return PropertiesService.getUserProperties().getProperty('seen') || '[]'; }
function token() { return ScriptApp.getIdentityToken(); }
function lockFor(ms) { return LockService.getDocumentLock().tryLock(ms); }
function waitFor(ms) { LockService.getDocumentLock().waitLock(ms); }
function values(row, col, rows, cols) { return SpreadsheetApp.getActive().getSheetByName('Leads').getRange(row, col, rows, cols).getValues(); }
function fetch(url) { return UrlFetchApp.fetch(url, { muteHttpExceptions: true }).getResponseCode(); }
function props(kind, key, value) {
  var p = kind === 'doc' ? PropertiesService.getDocumentProperties() : PropertiesService.getUserProperties();
  if (value !== undefined) p.setProperty(key, value);
  return p.getProperty(key);
}
function asText(row, col, value) { SpreadsheetApp.getActive().getSheetByName('Leads').getRange(row, col).setNumberFormat('@').setValue(value); }
function addonMenu() { SpreadsheetApp.getUi().createAddonMenu().addItem('x', 'x').addToUi(); }
`;

before(async () => {
  fake = await startFake(SCALE);
});

after(async () => {
  if (fake) await fake.stop();
});

beforeEach(() => {
  postJson(fake.backend_url + '/_fake/reset');
});

function world(options = {}) {
  return AppsScriptLocal.create({
    htmlFiles: options.htmlFiles || [],
    timeScale: SCALE,
    http,
    sheetsUrl: fake.sheets_url,
    spreadsheetId: fake.spreadsheet_id,
    source: PROBE,
    manifest: options.manifest || MANIFEST,
    routes: { [BACKEND_URL + '/']: fake.backend_url + '/' },
    users: options.users || {},
    fetchDeadlineMs: Math.round(AppsScriptLocal.FETCH_DEADLINE_MS * SCALE),
  });
}

function seen(w, user) {
  return JSON.parse(w.run(user, 'seenSoFar'));
}

test('a multi-cell edit is one event over the range with no value or oldValue; one cell has both', () => {
  const w = world();
  w.run(OPS, 'install', ['onEditProbe']);
  w.userPastes(SALES, 'Leads', 2, 1, [
    ['a', 'b'],
    ['c', 'd'],
    ['e', 'f'],
  ]);
  w.userTypes(SALES, 'Leads', 5, 11, 'Customer');
  w.userTypes(SALES, 'Leads', 5, 11, '');
  const [paste, typed, cleared] = seen(w, OPS);
  assert.deepEqual([paste.a1, paste.hasValue, paste.hasOldValue], ['A2:B4', false, false]);
  assert.deepEqual([typed.a1, typed.value, typed.hasOldValue], ['K5', 'Customer', true]);
  assert.deepEqual([cleared.hasValue, cleared.oldValue], [false, 'Customer']);
});

test('triggers are per person, and each runs as the person who installed it', () => {
  const w = world();
  const opsId = w.run(OPS, 'install', ['onEditProbe']);
  const salesId = w.run(SALES, 'install', ['onEditProbe']);
  assert.deepEqual(w.run(OPS, 'mine'), [opsId]);
  assert.deepEqual(w.run(SALES, 'mine'), [salesId]);

  w.userTypes('someone@example.com', 'Leads', 3, 11, 'SQL');
  const byOps = seen(w, OPS);
  const bySales = seen(w, SALES);
  assert.deepEqual([byOps[0].as, byOps[0].editor, byOps[0].triggerUid], [OPS, 'someone@example.com', opsId]);
  assert.deepEqual([bySales[0].as, bySales[0].triggerUid], [SALES, salesId]);

  w.run(OPS, 'install', ['clockProbe']);
  w.fireClock();
  assert.equal(seen(w, OPS).at(-1).clock, true);
  assert.equal(w.state.triggers.length, 3);
});

test('Document Properties are shared, User Properties are each person\'s own', () => {
  const w = world();
  w.run(OPS, 'props', ['doc', 'k', 'shared']);
  w.run(OPS, 'props', ['user', 'k', 'ops only']);
  assert.equal(w.run(SALES, 'props', ['doc', 'k']), 'shared');
  assert.equal(w.run(SALES, 'props', ['user', 'k']), null);
});

test('a lock held by another execution makes tryLock wait its timeout and fail; waitLock throws', () => {
  const w = world();
  const release = w.holdLock();
  assert.equal(w.run(OPS, 'lockFor', [30000]), false);
  assert.throws(() => w.run(OPS, 'waitFor', [30000]), /Lock timeout/);
  assert.deepEqual(w.state.lockWaits, [
    { user: OPS, kind: 'document', ms: 30000 },
    { user: OPS, kind: 'document', ms: 30000 },
  ]);
  release();
  assert.equal(w.run(OPS, 'lockFor', [10]), true);
  assert.equal(w.state.locks.document, null, 'released when the execution ends');
});

test('getValues gives Date objects for date cells, in the spreadsheet\'s zone', () => {
  const w = world();
  w.userTypes(SALES, 'Leads', 2, 1, '2026-12-03 10:15');
  const [[at]] = w.run(OPS, 'values', [2, 1, 1, 1]);
  assert.equal(Object.prototype.toString.call(at), '[object Date]');
  assert.equal(at.toISOString(), '2026-12-03T04:45:00.000Z', '10:15 in Asia/Kolkata');
  const stored = getJson(fake.sheets_url + '/_emulator/data').spreadsheets[fake.spreadsheet_id].sheets.Leads[1][0];
  assert.equal(typeof stored, 'number', 'the sheet holds a date serial, as Sheets does');
  w.userTypes(SALES, 'Leads', 2, 1, '2026-12-03T10:15:00+05:30');
  assert.equal(typeof w.run(OPS, 'values', [2, 1, 1, 1])[0][0], 'string', 'an ISO stamp with an offset stays text');
});

test('cell formats live in the sheet: a sort moves them with their rows; plain text keeps typed text', () => {
  // developers.google.com/sheets/api/guides/formats: a date is a serial in a cell with a date
  // format; Format → Number → Plain text ('@') keeps what is typed as text.
  const w = world();
  const before = w.tabRows('Leads').length;
  w.userTypes(SALES, 'Leads', 2, 1, 'zzz last');
  w.userTypes(SALES, 'Leads', 2, 25, '2026-12-03 10:15');
  const book = () => getJson(fake.sheets_url + '/_emulator/data').spreadsheets[fake.spreadsheet_id];
  assert.equal(book().formats.Leads.Y2.type, 'DATE_TIME', 'the emulator holds the format');
  w.userSorts(SALES, 'Leads', 1, false);
  const moved = w.tabRows('Leads').findIndex((r) => r[0] === 'zzz last') + 1;
  assert.ok(moved > 2 && moved <= before, 'the row moved down');
  const [[at]] = w.run(OPS, 'values', [moved, 25, 1, 1]);
  assert.equal(Object.prototype.toString.call(at), '[object Date]', 'still a date cell after the sort');
  assert.equal(book().formats.Leads['Y' + moved].type, 'DATE_TIME');
  w.run(OPS, 'asText', [moved, 26, '2026-12-04 11:00']);
  assert.equal(w.run(OPS, 'values', [moved, 26, 1, 1])[0][0], '2026-12-04 11:00', "an '@' cell keeps text");
});

test('UrlFetch reaches only https URLs under the manifest\'s allowlist, and gives up at the deadline', () => {
  const w = world();
  assert.equal(w.run(OPS, 'fetch', [BACKEND_URL + '/healthz']), 404);
  assert.throws(() => w.run(OPS, 'fetch', ['https://other.example.com/']), /not under a urlFetchWhitelist prefix/);
  assert.throws(() => w.run(OPS, 'fetch', ['http://sheet-bridge.example.com/']), /not under a urlFetchWhitelist prefix/);
  assert.throws(() => world({ manifest: { urlFetchWhitelist: ['http://127.0.0.1/'] } }), /must be an https:\/\/ URL prefix/);
  assert.throws(() => world({ manifest: { urlFetchWhitelist: ['https://sheet-bridge.example.com'] } }), /with a full domain and a path/);
  // 70 s of the backend's time against UrlFetch's 60 (both played 50× faster).
  assert.throws(() => w.run(OPS, 'fetch', [BACKEND_URL + '/_fake/slow?seconds=70']), /^Error: Timeout: https:\/\/sheet-bridge/);
});

test('the identity token is null for a person who granted none', () => {
  const w = world({ users: { [OPS]: { identityToken: 'granted' } } });
  assert.equal(w.run(OPS, 'token'), 'granted');
  assert.equal(w.run(SALES, 'token'), null);
});

test('in a bound script the add-on menu is named after the script project', () => {
  const w = world();
  w.run(OPS, 'addonMenu');
  assert.equal(w.state.menus[0].title, 'Untitled project');
});

test('the stand-in formats dates as Apps Script does for the stamp pattern', () => {
  const at = new Date('2026-01-01T00:00:00Z');
  const pattern = "yyyy-MM-dd'T'HH:mm:ssXXX";
  assert.equal(AppsScriptLocal.formatDate(at, 'Asia/Kolkata', pattern), '2026-01-01T05:30:00+05:30');
  assert.equal(AppsScriptLocal.formatDate(at, 'America/New_York', pattern), '2025-12-31T19:00:00-05:00');
  assert.equal(AppsScriptLocal.formatDate(at, 'Etc/UTC', pattern), '2026-01-01T00:00:00Z');
  // Every unquoted letter is a SimpleDateFormat pattern letter (Utilities.formatDate:
  // https://developers.google.com/apps-script/reference/utilities/utilities#formatDate(Date,String,String)):
  // one the stand-in does not emulate throws instead of passing through as text.
  assert.throws(() => AppsScriptLocal.formatDate(at, 'Etc/UTC', 'HH:mm:ss.SSS'), /not emulated/);
});

// ---- issue 20, item 6 ------------------------------------------------------------------------

test('each execution starts with fresh globals (what lasts goes to the Properties service)', () => {
  // https://developers.google.com/apps-script/guides/properties: scripts keep data between
  // executions in properties; a global variable is set up again by every execution.
  const w = world();
  assert.equal(w.run(OPS, 'bump'), 1);
  assert.equal(w.run(OPS, 'bump'), 1, 'the second run does not see the first run\'s count');
  w.run(OPS, 'install', ['onEditProbe']);
  w.userTypes(SALES, 'Leads', 3, 11, 'SQL');
  w.userTypes(SALES, 'Leads', 4, 11, 'SQL');
  assert.equal(seen(w, OPS).length, 2, 'kept in User Properties, not a global');
});

test('two triggers can run at the same time: the hourly one runs while an edit waits on UrlFetch', () => {
  // https://developers.google.com/apps-script/reference/lock/lock-service: locks exist because
  // executions of a script overlap ("multiple users or processes modifying a shared resource").
  const w = world();
  w.run(OPS, 'install', ['lockedEdit']);
  w.run(OPS, 'install', ['lockingClock']);
  w.meanwhile(() => w.fireClock());

  w.userTypes(SALES, 'Leads', 3, 11, 'SQL');

  assert.deepEqual(seen(w, OPS), [
    { edit: 'locked', got: true },
    { clock: 'locking', got: false },
    { edit: 'done' },
  ]);
  assert.deepEqual(w.state.lockWaits, [{ user: OPS, kind: 'document', ms: 10000 }]);
  assert.equal(w.state.locks.document, null, 'released when the edit\'s execution ended');
});

test('user, script and document locks are distinct locks', () => {
  // https://developers.google.com/apps-script/reference/lock/lock-service: getUserLock is the
  // current user's alone, getScriptLock any user's, getDocumentLock any user's of this document.
  const w = world();
  let release = w.holdLock('user', SALES);
  assert.deepEqual(w.run(OPS, 'locks'), [true, true, true], 'sales@\'s user lock is not ops@\'s, nor the others');
  assert.deepEqual(w.run(SALES, 'locks'), [false, true, true]);
  release();
  release = w.holdLock('script');
  assert.deepEqual(w.run(OPS, 'locks'), [true, false, true]);
  release();
  release = w.holdLock('document');
  assert.deepEqual(w.run(SALES, 'locks'), [true, true, false]);
  release();
  assert.deepEqual(w.state.locks, { document: null, script: null, user: {} }, 'every lock goes with its execution');
});

test('trigger runtime counts against the owner\'s daily quota: 90 min consumer, 6 h Workspace', () => {
  // https://developers.google.com/apps-script/guides/services/quotas: "Triggers total
  // runtime" 90 min / day (consumer accounts), 6 hr / day (Google Workspace accounts).
  const w = world({ users: { [SALES]: { workspace: true } } });
  w.run(OPS, 'install', ['slowClock']);
  w.run(SALES, 'install', ['slowClock']);
  w.chargeTriggerRuntime(OPS, 89.5 * 60000);
  w.chargeTriggerRuntime(SALES, 89.5 * 60000);

  w.fireClock(); // both run; ops@ goes past 90 minutes
  assert.ok(w.state.triggerRuntime[OPS].ms >= 90 * 60000, 'a 40-s run counted');
  assert.throws(() => w.fireClock(), /Service using too much computer time for one day/);

  const ran = (user) => seen(w, user).filter((x) => x.clock === 'ran').length;
  assert.deepEqual([ran(OPS), ran(SALES)], [1, 2], "ops@'s trigger ran once, sales@'s (Workspace) twice");
  const refused = w.state.executions.filter((x) => !x.ok);
  assert.deepEqual(refused.map((x) => [x.user, x.name]), [[OPS, 'slowClock']]);
  assert.equal(w.run(OPS, 'bump'), 1, 'a menu click or google.script.run is not a trigger: it still runs');
});

test('createHtmlOutputFromFile finds only files that exist in the project', () => {
  // https://developers.google.com/apps-script/reference/html/html-service#createHtmlOutputFromFile(String):
  // a file of the script project, by its name in the editor.
  const w = world({ htmlFiles: ['sidebar/Sidebar'] });
  assert.equal(w.run(OPS, 'sidebar', ['sidebar/Sidebar']), 't');
  assert.throws(() => w.run(OPS, 'sidebar', ['Sidebar']), /No HTML file named Sidebar was found/);
});
