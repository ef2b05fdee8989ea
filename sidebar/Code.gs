/**
 * sheet-bridge: the script bound to a spreadsheet of leads. It forwards the three ways work
 * enters (a status edit, Sync now, the hourly trigger) to the sheet-bridge backend and shows
 * what the backend answers. It decides nothing: which rows really changed, the stage map, the
 * hashing, Meta's time window and the funnel order all live in the backend.
 *
 * Every editor of the spreadsheet can open this script and read Document Properties, so they
 * hold nothing secret. Installable triggers belong to the person who installed them and run
 * as that person: one person per spreadsheet owns them (recorded in Document Properties), and
 * a trigger that finds it is not the owner's stands down without calling the backend. How each
 * person signs in is their own (User Properties); the owner's way is kept in the owner's record,
 * which is what the triggers use, so another editor's Save never changes it.
 *
 * Functions ending in "_" are private (google.script.run cannot call them).
 */

var PROPS_ = {
  backendUrl: 'sheetBridge.backendUrl', // Document Properties
  authMode: 'sheetBridge.authMode', // User Properties: "id_token" (default) | "secret" (an older version kept it in Document Properties)
  secret: 'sheetBridge.secret', // User Properties of the person who entered it (never the document's)
  columns: 'sheetBridge.columns', // Document Properties: JSON {tab, status, status_changed_at, key}
  lastError: 'sheetBridge.lastError', // Document Properties: JSON {at, where, message}
  owner: 'sheetBridge.owner', // Document Properties: JSON {email, authMode, triggers: {edit, hourly}, since}
};
var AUTH_MODES_ = ['id_token', 'secret'];
var EDIT_HANDLER_ = 'handleEdit'; // not "onEdit": a simple trigger of that name would run too
var HOURLY_HANDLER_ = 'hourlySync';
var KEY_COLUMN_ = 'CAPI Key'; // the bridge-owned column, when /api/status does not name it
var MAX_ROWS_PER_EDIT_ = 500; // the most /api/edits takes in one call
// The most items of one list handed to the sidebar through google.script.run (its total goes
// beside it): an answer is copied into the sidebar's page, and a long one stalls it.
var LIST_CAP_ = 50;
// How long the backend may hold a request before answering "still running" (202). UrlFetchApp
// gives up after about 60 s, so every wait stays far below it. The sidebar waits briefly so
// its progress bar starts within a couple of seconds; the menu has no progress bar.
var SIDEBAR_WAIT_S_ = 1;
var MENU_WAIT_S_ = 20;
var START_LOCK_MS_ = 2000;
var STAMP_PATTERN_ = "yyyy-MM-dd'T'HH:mm:ssXXX";
var STAMP_MAX_ = 200; // the longest Status Changed At /api/edits takes; a longer cell goes as null
var TITLE_ = 'sheet-bridge';

// ---- menu and sidebar ------------------------------------------------------------------

/** The simple trigger of a bound script: the "sheet-bridge" menu (createAddonMenu would be
 * named after the script project, and onInstall runs only for a published add-on). */
function onOpen() {
  SpreadsheetApp.getUi()
    .createMenu(TITLE_)
    .addItem('Open sidebar', 'showSidebar')
    .addItem('Sync now', 'menuSyncNow')
    .addSeparator()
    .addItem('Install triggers', 'menuInstallTriggers')
    .addItem('Remove triggers', 'menuRemoveTriggers')
    .addToUi();
}

function showSidebar() {
  var html = HtmlService.createHtmlOutputFromFile('sidebar/Sidebar').setTitle(TITLE_);
  SpreadsheetApp.getUi().showSidebar(html);
}

function menuSyncNow() {
  try {
    var answer = syncNow({ wait: MENU_WAIT_S_ });
    toast_(answer.state === 'done' ? summaryWords_(answer) : answer.info || passWords_(answer) + ' Open the sidebar to follow it.');
  } catch (err) {
    toast_(err.message, 'sheet-bridge: Sync now failed');
  }
}

function menuInstallTriggers() {
  try {
    toast_(installTriggers().message);
  } catch (err) {
    toast_(err.message, 'sheet-bridge: installing triggers failed');
  }
}

function menuRemoveTriggers() {
  try {
    toast_(removeTriggers().message);
  } catch (err) {
    toast_(err.message, 'sheet-bridge: removing triggers failed');
  }
}

// ---- what the sidebar calls (google.script.run) -----------------------------------------

/** Everything the status panel shows; a backend failure comes back as words, not a throw. */
function getSidebarState() {
  var settings = getSettings();
  var state = {
    settings: settings,
    owner: ownerView_(),
    triggers: myTriggerCounts_(),
    lastError: readJson_(PROPS_.lastError),
    status: null,
    error: null,
  };
  if (!settings.backendUrl) {
    state.error = 'Set the backend URL in Settings below (the https address of your sheet-bridge backend).';
    return state;
  }
  try {
    state.status = cappedStatus_(fetchStatus_());
  } catch (err) {
    state.error = err.message;
  }
  return state;
}

/**
 * The status with each list cut to LIST_CAP_ items and its full length kept as `<name>_total`
 * (a backend that already cut a list says its total itself).
 * @param {Object<string, *>} status /api/status's answer
 * @return {Object<string, *>}
 */
function cappedStatus_(status) {
  ['nearing_window', 'attention', 'warnings', 'alerts', 'stages'].forEach(function (name) {
    var list = status[name];
    if (!Array.isArray(list)) return;
    if (status[name + '_total'] === undefined) status[name + '_total'] = list.length;
    if (list.length > LIST_CAP_) status[name] = list.slice(0, LIST_CAP_);
  });
  return status;
}

/**
 * Start a full pass. The answer is the summary when the pass ends within `wait` seconds, else
 * the running pass ({pass_id, state: "running", phase, done, total}) to follow with getPass.
 * A pass already running is information ({state: "running", info, pass_id}), not a failure.
 */
function syncNow(options) {
  var body = bridgeRef_();
  body.trigger = 'sync';
  body.wait = waitSeconds_(options);
  return startPass_('Sync now', body);
}

/** A dry run: what a pass would send, and why not for the rest. Nothing is sent or written. */
function previewSync(options) {
  var body = bridgeRef_();
  body.dry_run = true;
  body.trigger = 'preview';
  body.wait = waitSeconds_(options);
  return startPass_('Preview', body);
}

/** A pass's phase, progress and, once done, its summary (rows needing attention from
 * rowsOffset, 50 at a time). */
function getPass(passId, rowsOffset) {
  if (!/^[\w.-]{1,100}$/.test(String(passId))) throw new Error('"' + passId + '" is not a pass id.');
  var query = '?rows_offset=' + Math.max(0, Number(rowsOffset) || 0) + '&rows_limit=50';
  var pass = callBackend_('get', '/api/passes/' + encodeURIComponent(passId) + query);
  if (pass.state === 'done') clearError_();
  return pass;
}

/** Select a row of the bridged tab (the sidebar's jump-to-row links). */
function jumpToRow(row) {
  row = Number(row);
  if (!(row >= 2)) throw new Error('Row ' + row + ' is not a data row.');
  var columns = cachedColumns_() || refreshColumns_();
  var sheet = SpreadsheetApp.getActive().getSheetByName(columns.tab);
  if (!sheet) throw new Error('The tab "' + columns.tab + '" is not in this spreadsheet.');
  sheet.getRange(row, 1).activate();
  return { tab: columns.tab, row: row };
}

/** The funnel report for the sidebar's panel: weekly counts (with an SVG chart) and advice. */
function getReport() {
  return callBackend_('get', '/api/report' + statusQuery_());
}

function getSettings() {
  var doc = PropertiesService.getDocumentProperties();
  return {
    backendUrl: doc.getProperty(PROPS_.backendUrl) || '',
    authMode: authMode_(),
    hasSecret: !!PropertiesService.getUserProperties().getProperty(PROPS_.secret),
    user: me_(),
  };
}

/**
 * Store the backend URL and how to authenticate, then check the backend answers for this
 * spreadsheet. The check's failure is returned in words (the settings stay saved).
 * settings: {backendUrl, authMode: "id_token"|"secret", secret?}. The URL is the document's;
 * the mode and the secret are the saving person's (User Properties), and when they own the
 * triggers their record says the mode too (triggers run as their installer, so the installer
 * enters the secret). Choosing Google sign-in deletes the saver's secret.
 */
function saveSettings(settings) {
  settings = settings || {};
  var url = String(settings.backendUrl || '').trim().replace(/\/+$/, '');
  // Apps Script fetches from Google's servers: only a public https address can be reached,
  // and urlFetchWhitelist (appsscript.json) admits https prefixes only.
  if (!/^https:\/\/[^\s/]+/.test(url)) {
    throw new Error('The backend URL must start with https:// (got "' + url + '").');
  }
  var mode = settings.authMode || 'id_token';
  if (mode !== 'id_token' && mode !== 'secret') {
    throw new Error('Authentication must be "id_token" or "secret" (got "' + mode + '").');
  }
  var doc = PropertiesService.getDocumentProperties();
  var mine = PropertiesService.getUserProperties();
  doc.setProperty(PROPS_.backendUrl, url);
  doc.deleteProperty(PROPS_.authMode); // where an older version kept everyone's, so one Save changed the triggers'
  doc.deleteProperty(PROPS_.secret); // where an older version kept it, readable by every editor
  mine.setProperty(PROPS_.authMode, mode);
  var owner = readJson_(PROPS_.owner);
  if (owner && owner.email && owner.email === me_()) writeJson_(PROPS_.owner, merge_(owner, { authMode: mode }));
  if (mode === 'id_token') mine.deleteProperty(PROPS_.secret);
  else if (settings.secret) mine.setProperty(PROPS_.secret, String(settings.secret));
  if (mode === 'secret' && !mine.getProperty(PROPS_.secret)) {
    throw new Error('Shared-secret mode needs the secret (the value of SHEET_BRIDGE_SECRET on the backend).');
  }
  var result = { saved: true, connected: false, error: null, settings: getSettings() };
  try {
    var columns = refreshColumns_();
    result.connected = true;
    result.tab = columns.tab;
  } catch (err) {
    result.error = err.message;
  }
  return result;
}

/**
 * Install the on-edit and hourly triggers as the person clicking, who becomes their owner.
 * When someone else owns them, nothing changes unless options.takeOver: then the clicker
 * installs their own pair and the previous owner's triggers stand down by themselves on their
 * next run (nobody can delete another person's triggers).
 */
function installTriggers(options) {
  var me = me_();
  var owner = readJson_(PROPS_.owner);
  if (owner && owner.email && owner.email !== me && !(options && options.takeOver)) {
    return {
      installed: false,
      owner: ownerView_(),
      triggers: myTriggerCounts_(),
      message: 'The triggers of this spreadsheet are installed by ' + owner.email + ' and run as them; nothing changed. To run them as you instead, open the sidebar and click Take over.',
    };
  }
  var mine = mySheetBridgeTriggers_();
  var edit = keepOne_(mine.edit) || ScriptApp.newTrigger(EDIT_HANDLER_).forSpreadsheet(SpreadsheetApp.getActive()).onEdit().create();
  // Hourly is the shortest period a time-driven trigger of an add-on may have.
  var hourly = keepOne_(mine.hourly) || ScriptApp.newTrigger(HOURLY_HANDLER_).timeBased().everyHours(1).create();
  writeJson_(PROPS_.owner, {
    email: me,
    authMode: myAuthMode_(),
    triggers: { edit: edit.getUniqueId(), hourly: hourly.getUniqueId() },
    since: new Date().toISOString(),
  });
  try {
    refreshColumns_(); // so the first edit knows the status column without asking
  } catch (ignored) {
    // the sidebar shows why the backend cannot be reached
  }
  var took = owner && owner.email && owner.email !== me ? ' (taken over from ' + owner.email + ', whose triggers now stand down)' : '';
  return {
    installed: true,
    owner: ownerView_(),
    triggers: myTriggerCounts_(),
    message: 'Triggers installed: status edits and the hourly sync now run as ' + me + took + '.',
  };
}

/** The explicit "run the triggers as me" of a second editor. */
function takeOverTriggers() {
  return installTriggers({ takeOver: true });
}

/** Remove the clicker's own triggers; when they owned them, nobody owns them afterwards (any
 * trigger left by an earlier owner stands down). Another owner's triggers cannot be removed. */
function removeTriggers() {
  var me = me_();
  var owner = readJson_(PROPS_.owner);
  var mine = mySheetBridgeTriggers_();
  mine.edit.concat(mine.hourly, mine.other).forEach(function (t) {
    ScriptApp.deleteTrigger(t);
  });
  if (owner && owner.email && owner.email !== me) {
    return {
      owner: ownerView_(),
      triggers: myTriggerCounts_(),
      message: 'The working triggers belong to ' + owner.email + ' and only they can remove them (or take over, then remove).',
    };
  }
  writeJson_(PROPS_.owner, { email: null, removed_by: me, since: new Date().toISOString() });
  return {
    owner: ownerView_(),
    triggers: myTriggerCounts_(),
    message: 'Triggers removed: status edits and the hourly sync no longer reach the backend.',
  };
}

// ---- triggers ---------------------------------------------------------------------------

/**
 * The installable onEdit handler. Acts only on edits that touch the bridged tab's status
 * column, and makes at most one backend call per edit event: the rows' current status and
 * CAPI Key (and, for a one-cell edit, the status it replaced) go to /api/edits, the backend
 * says which rows really changed, and only those get a Status Changed At stamp. Changes are
 * sent once they have settled (the backend's [sync] settle_seconds, docs/edits.md). A paste, fill-down, sort or row move carries no old values (Apps
 * Script gives e.value/e.oldValue for one-cell edits only), so nothing here guesses what
 * changed. API writes (the backend's write-back) do not fire this trigger, so it cannot loop.
 */
function handleEdit(e) {
  if (!e || !e.range) return;
  if (!runsForOwner_(e, 'edit')) return;
  var columns = cachedColumns_();
  var sheet = e.range.getSheet();
  if (!columns) {
    report_('edit', 'sheet-bridge does not know the status column yet, so this edit was not sent: open the sidebar once (sheet-bridge → Open sidebar). The next sync picks the change up.');
    return;
  }
  if (sheet.getName() !== columns.tab) return; // no sheet read for other tabs
  var header = sheet.getRange(1, 1, 1, Math.max(sheet.getLastColumn(), 1)).getValues()[0];
  var statusCol = header.indexOf(columns.status) + 1;
  if (statusCol < 1) {
    report_('edit', 'The status column "' + columns.status + '" is not in row 1 of "' + columns.tab + '"; nothing was sent.');
    return;
  }
  var range = e.range;
  if (statusCol < range.getColumn() || statusCol > range.getLastColumn()) return;
  var first = Math.max(range.getRow(), 2);
  var last = range.getLastRow();
  if (last < first) return; // the header itself

  // A one-cell edit says what it replaced; retyping the same value changes nothing. A one-cell
  // paste carries neither value, like a multi-cell edit: the backend decides.
  var oneCell = range.getNumRows() === 1 && range.getNumColumns() === 1;
  var known = oneCell && (e.value !== undefined || e.oldValue !== undefined);
  if (known && String(e.value === undefined ? '' : e.value) === String(e.oldValue === undefined ? '' : e.oldValue)) return;

  var ss = SpreadsheetApp.getActive();
  var timeZone = ss.getSpreadsheetTimeZone();
  var at = Utilities.formatDate(new Date(), timeZone, STAMP_PATTERN_);
  var keyCol = header.indexOf(columns.key || KEY_COLUMN_) + 1;
  var stampCol = columns.status_changed_at ? header.indexOf(columns.status_changed_at) + 1 : 0;
  // Each row's Status Changed At goes as it is before this edit stamps it: when the backend
  // withdraws a mis-click changed back in time, it says what to put back (docs/edits.md).
  var rows = currentRows_(sheet, first, last, statusCol, keyCol, stampCol, timeZone);
  if (!rows.length) return; // only blank rows with no lead behind them
  var content = stampCol > 0 ? keylessContent_(sheet, rows, header.length, stampCol, timeZone) : null;
  // What the cell held before: only a one-cell edit says (e.oldValue, undefined when it was
  // blank). With it the backend can tell a person's change of a lead it never synced from a
  // sort or paste over it (docs/edits.md); without it, it never guesses.
  if (known) rows[0].old_status = e.oldValue === undefined ? '' : String(e.oldValue);
  var ref = bridgeRef_(columns);

  if (rows.length > MAX_ROWS_PER_EDIT_) {
    // More rows than one /api/edits takes: one pass checks them all (still one call).
    try {
      var pass = startPassCall_(merge_(ref, { trigger: 'sync', wait: 0 }));
      toast_(rows.length + ' rows changed at once: ' + (pass.info || 'a sync is checking them now') + '. Their changes are dated by the backend, not stamped here.');
      clearError_();
    } catch (err) {
      report_('edit', err.message + ' (' + rows.length + ' rows not checked yet: the next sync checks them)');
      throw err;
    }
    return;
  }

  var answer;
  try {
    answer = callBackend_('post', '/api/edits', { spreadsheet_id: ref.spreadsheet_id, tab: columns.tab, at: at, rows: rows });
  } catch (err) {
    if (known) {
      // The stamp is then the only record of when this status changed.
      if (stampCol > 0) stampRows_(sheet, stampCol, keyCol, rows, [rows[0].row], at, timeZone, content);
      report_('edit', err.message + ' (1 status change stamped but not sent yet: the next sync sends it)');
    } else {
      report_('edit', err.message + ' (' + rows.length + ' row' + (rows.length === 1 ? '' : 's') + ' not checked yet, nothing stamped: the next sync checks them)');
    }
    throw err;
  }
  if (stampCol > 0) stampRows_(sheet, stampCol, keyCol, rows, answer.changed || [], at, timeZone, content);
  var restore = answer.restore || [];
  if (stampCol > 0 && restore.length) {
    try {
      restoreStamps_(sheet, stampCol, keyCol, rows, restore, timeZone, content);
    } catch (err) {
      // The backend never takes a withdrawn edit's time for a status's time; the cell only
      // shows a time that did not stand until someone fixes it.
      report_('edit', 'The change back was recorded, but ' + columns.status_changed_at + ' could not be put back (' + err.message + '); it still shows the time of the change that was withdrawn.');
      return;
    }
  }
  clearError_();
  if (answer.queued) toast_(answer.message || 'A sync is running; this change is recorded and goes out with it.');
  // A change waits to settle before it is sent, and a change back in time sends nothing:
  // say which, and when it goes (the sidebar lists what is pending).
  else if ((answer.pending || []).length || (answer.withdrawn || []).length) toast_(answer.message);
}

/** The hourly safety net: starts a pass and does not wait for it (the backend reports a pass
 * that fails in /api/status alerts). A failure to start is recorded for the sidebar and
 * rethrown, so Apps Script marks the execution failed and e-mails the trigger's owner. */
function hourlySync(e) {
  if (!runsForOwner_(e, 'hourly')) return;
  try {
    var answer = startPassCall_(merge_(bridgeRef_(), { trigger: 'hourly', wait: 0 }));
    if (answer.info) console.log('sheet-bridge hourly sync: ' + answer.info);
    clearError_();
  } catch (err) {
    report_('hourly sync', err.message);
    throw err;
  }
}

/** Whether this run may call the backend: only the recorded owner's own triggers may. A
 * trigger of someone else (an earlier owner) or a duplicate deletes itself and stops here. */
function runsForOwner_(e, kind) {
  var me = me_();
  var uid = e && e.triggerUid ? String(e.triggerUid) : null;
  var owner = readJson_(PROPS_.owner);
  if (!owner) {
    // Installed by a version that recorded no owner: the first run claims the triggers.
    var mine = mySheetBridgeTriggers_();
    var ids = { edit: firstId_(mine.edit), hourly: firstId_(mine.hourly) };
    if (uid) ids[kind] = uid;
    writeJson_(PROPS_.owner, { email: me, authMode: myAuthMode_(), triggers: ids, since: new Date().toISOString() });
    return true;
  }
  if (owner.email === me && (!uid || !owner.triggers || String(owner.triggers[kind]) === uid)) return true;
  if (uid) {
    ScriptApp.getProjectTriggers().forEach(function (t) {
      if (String(t.getUniqueId()) === uid) ScriptApp.deleteTrigger(t);
    });
  }
  console.log('sheet-bridge ' + kind + ' trigger of ' + me + ' stood down: the triggers belong to ' + (owner.email || 'nobody') + '.');
  return false;
}

// ---- reading the edited rows ------------------------------------------------------------

/**
 * Each row's status, CAPI Key and (when the tab has the column) Status Changed At as the sheet
 * holds them now; blank rows without a key (nothing to tell the backend) are left out. One
 * read for the whole block.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {number} first
 * @param {number} last
 * @param {number} statusCol
 * @param {number} keyCol 0 when the tab has no CAPI Key column
 * @param {number} stampCol 0 when the tab has no Status Changed At column
 * @param {string} timeZone
 * @return {{row: number, status: string, key: ?string, old_status?: string, status_changed_at?: ?string}[]}
 */
function currentRows_(sheet, first, last, statusCol, keyCol, stampCol, timeZone) {
  var cols = [statusCol, keyCol, stampCol].filter(function (c) {
    return c > 0;
  });
  var lo = Math.min.apply(null, cols);
  var hi = Math.max.apply(null, cols);
  var block = sheet.getRange(first, lo, last - first + 1, hi - lo + 1).getValues();
  var rows = [];
  block.forEach(function (line, i) {
    var status = cellText_(line[statusCol - lo], timeZone);
    var key = keyCol > 0 ? cellText_(line[keyCol - lo], timeZone) : '';
    if (status === '' && key === '') return;
    var row = /** @type {{row: number, status: string, key: ?string, old_status?: string, status_changed_at?: ?string}} */ ({ row: first + i, status: status, key: key === '' ? null : key });
    if (stampCol > 0) {
      var stamp = stampText_(line[stampCol - lo], timeZone);
      row.status_changed_at = stamp.length > STAMP_MAX_ ? null : stamp;
    }
    rows.push(row);
  });
  return rows;
}

/**
 * A Status Changed At cell as text that means to the backend what the cell did: a date cell
 * at midnight (a date without a time of day, "some time that day") as yyyy-MM-dd, any other
 * date as the date-time with its offset, text as is.
 * @param {*} value one cell of getValues()
 * @param {string} timeZone
 * @return {string}
 */
function stampText_(value, timeZone) {
  var isDate = Object.prototype.toString.call(value) === '[object Date]';
  if (isDate && Utilities.formatDate(value, timeZone, 'HH:mm:ss') === '00:00:00') return Utilities.formatDate(value, timeZone, 'yyyy-MM-dd');
  return cellText_(value, timeZone);
}

/**
 * What tells rows without a CAPI Key apart once they may have moved: each one's cells (all but
 * the stamp's), read now, by row number. Null when every row has a key (one read otherwise).
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {{row: number, status: string, key: ?string}[]} rows the rows sent
 * @param {number} width the header's width
 * @param {number} stampCol Status Changed At's column (1-based)
 * @param {string} timeZone the spreadsheet's
 * @return {?{width: number, byRow: Object<number, string>}}
 */
function keylessContent_(sheet, rows, width, stampCol, timeZone) {
  var keyless = rows.filter(function (r) {
    return r.key === null;
  });
  if (!keyless.length) return null;
  var lo = keyless[0].row;
  var hi = keyless[keyless.length - 1].row;
  var block = sheet.getRange(lo, 1, hi - lo + 1, width).getValues();
  var byRow = /** @type {Object<number, string>} */ ({});
  keyless.forEach(function (r) {
    byRow[r.row] = rowContent_(block[r.row - lo], stampCol, timeZone);
  });
  return { width: width, byRow: byRow };
}

/**
 * A row's cells as one comparable text, the stamp's cell left out (a stamp is not the lead).
 * @param {*[]} line one row of getValues()
 * @param {number} stampCol 1-based
 * @param {string} timeZone
 * @return {string}
 */
function rowContent_(line, stampCol, timeZone) {
  return JSON.stringify(
    line.map(function (v, i) {
      return i === stampCol - 1 ? '' : cellText_(v, timeZone);
    })
  );
}

/**
 * Stamp the given rows' Status Changed At with `at` (as text, so Sheets keeps the offset), each
 * where its lead is now: a row with a CAPI Key only while that key is still in it; a row
 * without one where its cells are (a sort between the edit and now moves them), else nowhere.
 * A cleared status is never stamped: no status is no stage to date. One read, one write per
 * run of consecutive rows.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {number} stampCol
 * @param {number} keyCol 0 when the tab has no CAPI Key column
 * @param {{row: number, status: string, key: ?string}[]} rows the rows sent
 * @param {number[]} rowNumbers those of them to stamp
 * @param {string} at the stamp
 * @param {string} timeZone
 * @param {?{width: number, byRow: Object<number, string>}} content keylessContent_'s
 */
function stampRows_(sheet, stampCol, keyCol, rows, rowNumbers, at, timeZone, content) {
  var found = leadsNow_(sheet, stampCol, keyCol, rows, rowNumbers, timeZone, content, true);
  var still = Object.keys(found.rowNow).map(function (n) {
    return found.rowNow[Number(n)];
  });
  still.sort(function (a, b) {
    return a - b;
  });
  runs_(still).forEach(function (run) {
    var stamps = [];
    for (var i = 0; i < run.count; i++) stamps.push([at]);
    sheet.getRange(run.start, stampCol, run.count, 1).setNumberFormat('@').setValues(stamps);
  });
}

/**
 * Put back the Status Changed At of rows whose edit the backend withdrew (changed back before
 * it settled), each where its lead is now, and only while the cell still holds a stamp of
 * that edit (from stamped_from to stamped_to, to the second): a time someone typed since
 * stays. Written as text, as stamps are.
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {number} stampCol
 * @param {number} keyCol
 * @param {{row: number, status: string, key: ?string}[]} rows the rows sent
 * @param {{row: number, status_changed_at: string, stamped_from: string, stamped_to: string}[]} restore the answer's
 * @param {string} timeZone
 * @param {?{width: number, byRow: Object<number, string>}} content keylessContent_'s
 */
function restoreStamps_(sheet, stampCol, keyCol, rows, restore, timeZone, content) {
  var wanted = /** @type {Object<number, *>} */ ({});
  restore.forEach(function (r) {
    wanted[r.row] = r;
  });
  var found = leadsNow_(sheet, stampCol, keyCol, rows, Object.keys(wanted).map(Number), timeZone, content, false);
  Object.keys(found.rowNow).forEach(function (n) {
    var r = wanted[Number(n)];
    var here = found.rowNow[Number(n)];
    var cell = found.now[here - found.lo][stampCol - 1];
    var held = Object.prototype.toString.call(cell) === '[object Date]' ? cell.getTime() : Date.parse(String(cell));
    var second = Math.floor(held / 1000);
    if (!(second >= Math.floor(Date.parse(r.stamped_from) / 1000) && second <= Math.floor(Date.parse(r.stamped_to) / 1000))) return;
    sheet.getRange(here, stampCol).setNumberFormat('@').setValue(String(r.status_changed_at));
  });
}

/**
 * Where the leads of the given sent rows are now (one read): a row with a CAPI Key only while
 * that key is still in it; a row without one where its cells are (a sort between the edit and
 * now moves them), else nowhere. With `withStatus`, only rows sent with a status (a cleared
 * status is never stamped: no status is no stage to date).
 * @param {GoogleAppsScript.Spreadsheet.Sheet} sheet
 * @param {number} stampCol
 * @param {number} keyCol 0 when the tab has no CAPI Key column
 * @param {{row: number, status: string, key: ?string}[]} rows the rows sent
 * @param {number[]} rowNumbers those of them wanted
 * @param {string} timeZone
 * @param {?{width: number, byRow: Object<number, string>}} content keylessContent_'s
 * @param {boolean} withStatus
 * @return {{now: *[][], lo: number, rowNow: Object<number, number>}} rowNow: sent row → its row now
 */
function leadsNow_(sheet, stampCol, keyCol, rows, rowNumbers, timeZone, content, withStatus) {
  var sent = {};
  rows.forEach(function (r) {
    sent[r.row] = r;
  });
  var targets = rowNumbers.filter(function (n) {
    return sent[n] && (!withStatus || sent[n].status !== '');
  });
  var rowNow = /** @type {Object<number, number>} */ ({});
  if (!targets.length) return { now: [], lo: 0, rowNow: rowNow };
  targets.sort(function (a, b) {
    return a - b;
  });
  var lo = targets[0];
  var hi = targets[targets.length - 1];
  var width = Math.max(keyCol, stampCol, content ? content.width : 0, 1);
  var now = sheet.getRange(lo, 1, hi - lo + 1, width).getValues();
  var taken = /** @type {Object<number, boolean>} */ ({});
  targets.forEach(function (n) {
    var r = sent[n];
    var found = -1;
    if (r.key !== null) {
      if (keyCol <= 0 || cellText_(now[n - lo][keyCol - 1], timeZone) === r.key) found = n;
    } else if (content && content.byRow[n] !== undefined) {
      found = whereContent_(now, lo, n, content.byRow[n], stampCol, timeZone, taken);
    }
    if (found > 0) {
      taken[found] = true;
      rowNow[n] = found;
    }
  });
  return { now: now, lo: lo, rowNow: rowNow };
}

/**
 * The row (within `now`, which starts at row `lo`) showing `wanted` now: row `n` when it still
 * does, else the one other row that does; -1 when none, or several, do. Rows in `taken` are
 * already someone's.
 * @param {*[][]} now the rows as read now
 * @param {number} lo the row number of now[0]
 * @param {number} n the row the lead was in
 * @param {string} wanted its rowContent_ then
 * @param {number} stampCol
 * @param {string} timeZone
 * @param {Object<number, boolean>} taken
 * @return {number}
 */
function whereContent_(now, lo, n, wanted, stampCol, timeZone, taken) {
  if (!taken[n] && rowContent_(now[n - lo], stampCol, timeZone) === wanted) return n;
  var hits = [];
  now.forEach(function (line, i) {
    if (!taken[lo + i] && rowContent_(line, stampCol, timeZone) === wanted) hits.push(lo + i);
  });
  return hits.length === 1 ? hits[0] : -1;
}

/** Sorted row numbers as runs of consecutive rows: one write per run. */
function runs_(sorted) {
  var out = [];
  sorted.forEach(function (n) {
    var run = out[out.length - 1];
    if (run && run.start + run.count === n) run.count++;
    else out.push({ start: n, count: 1 });
  });
  return out;
}

/** A cell as the backend reads it: text as is, a date cell (getValues gives a Date) as ISO
 * 8601 in the sheet's zone, TRUE/FALSE for a checkbox. */
function cellText_(value, timeZone) {
  if (value === null || value === undefined) return '';
  if (Object.prototype.toString.call(value) === '[object Date]') return Utilities.formatDate(value, timeZone, STAMP_PATTERN_);
  if (value === true || value === false) return value ? 'TRUE' : 'FALSE';
  return String(value).trim();
}

// ---- backend calls ----------------------------------------------------------------------

function bridgeRef_(columns) {
  var ref = { spreadsheet_id: SpreadsheetApp.getActive().getId() };
  columns = columns || cachedColumns_();
  if (columns && columns.tab) ref.tab = columns.tab;
  return ref;
}

function statusQuery_() {
  var ref = bridgeRef_();
  return '?spreadsheet_id=' + encodeURIComponent(ref.spreadsheet_id) + (ref.tab ? '&tab=' + encodeURIComponent(ref.tab) : '');
}

function waitSeconds_(options) {
  var wait = options && options.wait !== undefined ? Number(options.wait) : SIDEBAR_WAIT_S_;
  return Math.max(0, Math.min(25, wait));
}

/** Start a pass from the add-on. Only this is guarded by the document lock (two clicks in the
 * same spreadsheet start one pass); reads and edits take no lock, the backend serialises
 * passes itself. */
function startPass_(what, body) {
  var lock = LockService.getDocumentLock();
  if (!lock.tryLock(START_LOCK_MS_)) {
    return { state: 'starting', info: what + ': someone in this spreadsheet is starting a pass right now; its progress shows here in a moment.' };
  }
  try {
    var answer = startPassCall_(body);
    if (answer.state === 'done') clearError_();
    return answer;
  } finally {
    lock.releaseLock();
  }
}

/** POST /api/sync: the summary (200), the running pass (202), or, when a pass of this tab is
 * already running (409), that pass with words saying so. */
function startPassCall_(body) {
  var answer = request_('post', '/api/sync', body);
  if (answer.code === 409 && answer.data && answer.data.error && answer.data.error.code === 'sync_running') {
    return {
      state: 'running',
      pass_id: answer.data.pass_id || null,
      info: 'A sync of this tab is already running' + (answer.data.pass_id ? '; following it' : '; try again in a minute'),
    };
  }
  return accepted_(answer);
}

function fetchStatus_() {
  var status = callBackend_('get', '/api/status' + statusQuery_());
  cacheColumns_(status);
  return status;
}

function refreshColumns_() {
  var columns = cacheColumns_(fetchStatus_());
  if (!columns) throw new Error('The backend did not say which column holds the lead status.');
  return columns;
}

function cacheColumns_(status) {
  if (!status || !status.columns || !status.columns.status) return null;
  var columns = {
    tab: status.tab,
    status: status.columns.status,
    status_changed_at: status.columns.status_changed_at || null,
    key: status.columns.key || KEY_COLUMN_,
  };
  writeJson_(PROPS_.columns, columns);
  return columns;
}

/** The backend's column names as last fetched (every sidebar open refreshes them); null
 * when never fetched. An edit uses them without asking, so it makes one call at most. */
function cachedColumns_() {
  var columns = readJson_(PROPS_.columns);
  return columns && columns.tab && columns.status ? columns : null;
}

/** The Authorization header, or an Error in words: never "Bearer null". */
function authorization_() {
  var mode = authMode_();
  var mine = PropertiesService.getUserProperties();
  if (mode === 'secret') {
    var secret = mine.getProperty(PROPS_.secret);
    if (!secret) {
      throw new Error('Shared-secret mode, but no secret is stored for ' + me_() + ': the secret is kept per person (in their own User Properties, which other editors cannot read); enter it in the sidebar Settings. Triggers use the secret of the person who installed them.');
    }
    return 'Bearer ' + secret;
  }
  if (mine.getProperty(PROPS_.secret)) mine.deleteProperty(PROPS_.secret); // left from shared-secret mode
  var token = ScriptApp.getIdentityToken();
  if (!token) {
    throw new Error('Google sign-in gave no identity token for ' + (me_() || 'this account') + ': the script needs the openid and userinfo.email permissions. Reload the spreadsheet and open sheet-bridge → Open sidebar to grant them (for a trigger: its owner does this).');
  }
  return 'Bearer ' + token;
}

/**
 * How this person signs in to the backend. The trigger owner's way is the one in their record
 * (their triggers use it); anyone else's is their own choice. Never the document's: one
 * editor's Save must not change how the owner's triggers sign in.
 * @return {string} "id_token" | "secret"
 */
function authMode_() {
  var owner = readJson_(PROPS_.owner);
  if (owner && owner.email && owner.email === me_() && AUTH_MODES_.indexOf(owner.authMode) !== -1) return owner.authMode;
  return myAuthMode_();
}

/**
 * The mode this person chose; before they chose one here, "secret" when they keep a secret
 * (choosing Google sign-in deletes it), else Google sign-in.
 * @return {string} "id_token" | "secret"
 */
function myAuthMode_() {
  var mine = PropertiesService.getUserProperties();
  var chosen = mine.getProperty(PROPS_.authMode);
  if (AUTH_MODES_.indexOf(chosen) !== -1) return chosen;
  return mine.getProperty(PROPS_.secret) ? 'secret' : 'id_token';
}

/** One request to the backend: {code, data, text}, or an Error saying it could not be made. */
function request_(method, path, body) {
  var base = PropertiesService.getDocumentProperties().getProperty(PROPS_.backendUrl);
  if (!base) throw new Error('The backend URL is not set: open the sidebar and fill in Settings.');
  var options = {
    method: method,
    contentType: 'application/json',
    headers: { Authorization: authorization_() },
    muteHttpExceptions: true,
    followRedirects: false,
  };
  if (body !== undefined) options.payload = JSON.stringify(body);
  var response;
  try {
    response = UrlFetchApp.fetch(base + path, options);
  } catch (err) {
    throw new Error('Could not reach the sheet-bridge backend at ' + base + ' (' + err.message + '). Check the backend URL in Settings and that the backend is running.');
  }
  var text = response.getContentText();
  var data = null;
  try {
    data = JSON.parse(text);
  } catch (ignored) {
    data = null; // described with the status code and the start of the body
  }
  return { code: response.getResponseCode(), data: data, text: text };
}

/** The parsed JSON of a 2xx answer; an Error saying what went wrong and what to do otherwise. */
function callBackend_(method, path, body) {
  return accepted_(request_(method, path, body));
}

function accepted_(answer) {
  if (answer.code >= 200 && answer.code < 300 && answer.data !== null) return answer.data;
  throw new Error(failureWords_(answer.code, answer.data, answer.text));
}

function failureWords_(code, data, text) {
  var err = data && data.error ? data.error : null;
  var said = err ? err.message + ' (' + err.code + ', HTTP ' + code + ')' : 'HTTP ' + code + ': ' + String(text).slice(0, 200);
  if (code === 401) {
    return 'The backend refused the credentials: ' + said + '. For Google sign-in, check that the backend\'s id_token_audience matches this script; for a shared secret, that it equals SHEET_BRIDGE_SECRET on the backend.';
  }
  if (code === 403) return 'The backend refused this account: ' + said + '. Ask the backend\'s owner to add ' + (me_() || 'your e-mail') + ' to allowed_emails.';
  if (code === 404) return 'The backend does not know this spreadsheet: ' + said + '. Check spreadsheet_id and tab in the backend\'s config.';
  if (code === 409) return 'The backend cannot run this now: ' + said + '.';
  if (code >= 500) return 'The sheet-bridge backend failed: ' + said + '. Nothing was lost: the next sync retries.';
  if (code >= 200 && code < 300) return 'The backend answered something that is not JSON: ' + said;
  return 'The backend rejected the request: ' + said;
}

// ---- owner and triggers ------------------------------------------------------------------

function me_() {
  return Session.getEffectiveUser().getEmail() || '';
}

/** Who runs the triggers and how they sign in, for everyone's sidebar: {email, since, me,
 * authMode} (email null: nobody). */
function ownerView_() {
  var owner = readJson_(PROPS_.owner);
  if (!owner) return null;
  return { email: owner.email || null, since: owner.since || null, me: !!owner.email && owner.email === me_(), authMode: owner.authMode || null };
}

/** The current person's sheet-bridge triggers (getProjectTriggers sees nobody else's). */
function mySheetBridgeTriggers_() {
  var found = { edit: [], hourly: [], other: [] };
  ScriptApp.getProjectTriggers().forEach(function (t) {
    var handler = t.getHandlerFunction();
    if (handler === EDIT_HANDLER_ && t.getEventType() === ScriptApp.EventType.ON_EDIT) found.edit.push(t);
    else if (handler === HOURLY_HANDLER_ && t.getEventType() === ScriptApp.EventType.CLOCK) found.hourly.push(t);
    else if (handler === EDIT_HANDLER_ || handler === HOURLY_HANDLER_) found.other.push(t);
  });
  found.other.forEach(function (t) {
    ScriptApp.deleteTrigger(t); // our handler on the wrong kind of event, from a hand-made trigger
  });
  found.other = [];
  return found;
}

/** The first of a person's duplicate triggers, the rest deleted (older installs could add a
 * pair per click). */
function keepOne_(triggers) {
  triggers.slice(1).forEach(function (t) {
    ScriptApp.deleteTrigger(t);
  });
  return triggers[0] || null;
}

function firstId_(triggers) {
  return triggers.length ? triggers[0].getUniqueId() : null;
}

function myTriggerCounts_() {
  var mine = mySheetBridgeTriggers_();
  return { onEdit: mine.edit.length, hourly: mine.hourly.length };
}

// ---- words and bookkeeping --------------------------------------------------------------

/** A pass's rows by outcome (every row is in one, so they add up to the rows read; pending
 * only when an edit is still settling), then the events it sent. */
function summaryWords_(summary) {
  var keys = ['sent', 'already_sent', 'pending', 'expired', 'baseline', 'invalid', 'skipped', 'failed'];
  var parts = keys.filter(function (k) {
    return k !== 'pending' || summary[k];
  }).map(function (k) {
    return (k === 'already_sent' ? 'up to date' : k) + ' ' + (summary[k] || 0);
  });
  return 'Sync done. Rows: ' + parts.join(' · ') + '. ' + (summary.events_sent || 0) + ' event(s) sent to Meta.';
}

function passWords_(pass) {
  var phase = { read: 'reading the sheet', send: 'sending to Meta', write: 'writing back' }[pass.phase] || 'running';
  var progress = pass.total ? ' (' + (pass.done || 0) + ' of ' + pass.total + ')' : '';
  return 'Sync started and still running: ' + phase + progress + '.';
}

function report_(where, message) {
  writeJson_(PROPS_.lastError, { at: new Date().toISOString(), where: where, message: message });
  toast_(message, 'sheet-bridge: ' + where + ' failed');
  console.error('sheet-bridge ' + where + ': ' + message);
}

function clearError_() {
  PropertiesService.getDocumentProperties().deleteProperty(PROPS_.lastError);
}

function toast_(message, title) {
  SpreadsheetApp.getActive().toast(message, title || TITLE_, 10);
}

function merge_(a, b) {
  var out = {};
  [a, b].forEach(function (o) {
    Object.keys(o).forEach(function (k) {
      out[k] = o[k];
    });
  });
  return out;
}

function readJson_(key) {
  var text = PropertiesService.getDocumentProperties().getProperty(key);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (ignored) {
    return null; // a corrupted value is treated as absent and rewritten on the next call
  }
}

function writeJson_(key, value) {
  PropertiesService.getDocumentProperties().setProperty(key, JSON.stringify(value));
}
