/**
 * sheet-bridge add-on: the three ways work enters (a status edit, Sync now, the hourly
 * trigger) forwarded to the sheet-bridge backend. It decides nothing: the stage map, the
 * hashing, Meta's time window and the funnel order all live in the backend.
 *
 * Functions ending in "_" are private (google.script.run cannot call them).
 */

var PROPS_ = {
  backendUrl: 'sheetBridge.backendUrl',
  authMode: 'sheetBridge.authMode', // "id_token" | "secret"
  secret: 'sheetBridge.secret',
  columns: 'sheetBridge.columns', // JSON {tab, status, status_changed_at, fetched_at}
  lastError: 'sheetBridge.lastError', // JSON {at, where, message}
};
var EDIT_HANDLER_ = 'handleEdit'; // not "onEdit": a simple trigger of that name would run too
var HOURLY_HANDLER_ = 'hourlySync';
var LOCK_WAIT_MS_ = 30000;
var MAX_EDITS_PER_RUN_ = 50;
var COLUMNS_TTL_MS_ = 6 * 60 * 60 * 1000;
var TITLE_ = 'sheet-bridge';

// ---- menu and sidebar ------------------------------------------------------------------

function onInstall(e) {
  onOpen(e);
}

function onOpen() {
  SpreadsheetApp.getUi()
    .createAddonMenu()
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
    toast_(summaryWords_(syncNow()));
  } catch (err) {
    toast_(err.message, 'sheet-bridge: Sync now failed');
  }
}

function menuInstallTriggers() {
  try {
    var t = installTriggers();
    toast_('Triggers installed: ' + t.onEdit + ' on edit, ' + t.hourly + ' hourly.');
  } catch (err) {
    toast_(err.message, 'sheet-bridge: installing triggers failed');
  }
}

function menuRemoveTriggers() {
  try {
    removeTriggers();
    toast_('Triggers removed: status edits and the hourly sync no longer reach the backend.');
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
    triggers: triggerCounts_(),
    lastError: readJson_(PROPS_.lastError),
    status: null,
    error: null,
  };
  if (!settings.backendUrl) {
    state.error = 'Set the backend URL in Settings below (the https address of your sheet-bridge backend).';
    return state;
  }
  try {
    state.status = fetchStatus_();
  } catch (err) {
    state.error = err.message;
  }
  return state;
}

/** A full pass now; throws the backend's failure in words. */
function syncNow() {
  var summary = withLock_('Sync now', function () {
    return callBackend_('post', '/api/sync', bridgeRef_());
  });
  clearError_();
  return summary;
}

/** A dry run: what a pass would send, and why not for the rest. Nothing is sent or written. */
function previewSync() {
  var ref = bridgeRef_();
  ref.dry_run = true;
  return withLock_('Preview', function () {
    return callBackend_('post', '/api/sync', ref);
  });
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

function getSettings() {
  var props = PropertiesService.getDocumentProperties();
  return {
    backendUrl: props.getProperty(PROPS_.backendUrl) || '',
    authMode: props.getProperty(PROPS_.authMode) || 'id_token',
    hasSecret: !!props.getProperty(PROPS_.secret),
    user: Session.getActiveUser().getEmail(),
  };
}

/**
 * Store the backend URL and how to authenticate, then check the backend answers for this
 * spreadsheet. The check's failure is returned in words (the settings stay saved).
 * settings: {backendUrl, authMode: "id_token"|"secret", secret?} (secret kept when omitted).
 */
function saveSettings(settings) {
  settings = settings || {};
  var url = String(settings.backendUrl || '').trim().replace(/\/+$/, '');
  if (!/^https:\/\/[^\s/]+/.test(url) && !/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?(\/|$)/.test(url)) {
    throw new Error('The backend URL must start with https:// (got "' + url + '").');
  }
  var mode = settings.authMode || 'id_token';
  if (mode !== 'id_token' && mode !== 'secret') {
    throw new Error('Authentication must be "id_token" or "secret" (got "' + mode + '").');
  }
  var props = PropertiesService.getDocumentProperties();
  props.setProperty(PROPS_.backendUrl, url);
  props.setProperty(PROPS_.authMode, mode);
  if (settings.secret) props.setProperty(PROPS_.secret, String(settings.secret));
  if (mode === 'secret' && !props.getProperty(PROPS_.secret)) {
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

/** Exactly one onEdit and one hourly trigger for this spreadsheet, however often clicked. */
function installTriggers() {
  var existing = ScriptApp.getProjectTriggers();
  var keep = {};
  existing.forEach(function (t) {
    var handler = t.getHandlerFunction();
    var kind =
      handler === EDIT_HANDLER_ && t.getEventType() === ScriptApp.EventType.ON_EDIT
        ? 'edit'
        : handler === HOURLY_HANDLER_ && t.getEventType() === ScriptApp.EventType.CLOCK
          ? 'hourly'
          : null;
    if (kind === null) {
      if (handler === EDIT_HANDLER_ || handler === HOURLY_HANDLER_) ScriptApp.deleteTrigger(t);
      return;
    }
    if (keep[kind]) ScriptApp.deleteTrigger(t); // a duplicate from an older install
    else keep[kind] = t;
  });
  if (!keep.edit) {
    ScriptApp.newTrigger(EDIT_HANDLER_).forSpreadsheet(SpreadsheetApp.getActive()).onEdit().create();
  }
  if (!keep.hourly) {
    // Hourly is the shortest period an add-on's time-driven trigger may have.
    ScriptApp.newTrigger(HOURLY_HANDLER_).timeBased().everyHours(1).create();
  }
  return triggerCounts_();
}

function removeTriggers() {
  ScriptApp.getProjectTriggers().forEach(function (t) {
    var handler = t.getHandlerFunction();
    if (handler === EDIT_HANDLER_ || handler === HOURLY_HANDLER_) ScriptApp.deleteTrigger(t);
  });
  return triggerCounts_();
}

// ---- triggers ---------------------------------------------------------------------------

/**
 * The installable onEdit handler. Acts only on the bridged tab's status column: stamps Status
 * Changed At for each edited row, then tells the backend (old and new value) under the
 * document lock. API writes (the backend's write-back) do not fire it, so it cannot loop.
 */
function handleEdit(e) {
  if (!e || !e.range) return;
  var range = e.range;
  var sheet = range.getSheet();
  var columns = cachedColumns_();
  if (columns && sheet.getName() !== columns.tab) return; // no sheet read for other tabs
  if (!columns) {
    try {
      columns = refreshColumns_();
    } catch (err) {
      // An old answer still says where to stamp; the post below then reports the failure.
      columns = cachedColumns_(true);
      if (!columns) {
        report_('edit', 'Could not tell the backend about this edit: ' + err.message);
        throw err;
      }
    }
    if (sheet.getName() !== columns.tab) return;
  }
  var header = sheet.getRange(1, 1, 1, Math.max(sheet.getLastColumn(), 1)).getValues()[0];
  var statusCol = header.indexOf(columns.status) + 1;
  if (statusCol < 1) {
    report_('edit', 'The status column "' + columns.status + '" is not in row 1 of "' + columns.tab + '"; nothing was sent.');
    return;
  }
  if (statusCol < range.getColumn() || statusCol > range.getLastColumn()) return;
  var first = Math.max(range.getRow(), 2);
  var last = range.getLastRow();
  if (last < first) return; // the header itself

  var ss = SpreadsheetApp.getActive();
  var at = Utilities.formatDate(new Date(), ss.getSpreadsheetTimeZone(), "yyyy-MM-dd'T'HH:mm:ssXXX");
  var stampCol = columns.status_changed_at ? header.indexOf(columns.status_changed_at) + 1 : 0;
  var single = first === last && range.getNumRows() === 1 && range.getNumColumns() === 1;
  var newValues = single ? [[e.value === undefined ? range.getValue() : e.value]] : sheet.getRange(first, statusCol, last - first + 1, 1).getValues();
  if (stampCol > 0) {
    // Text format keeps the offset: Sheets would otherwise turn the stamp into a serial date.
    var stamps = newValues.map(function () {
      return [at];
    });
    sheet.getRange(first, stampCol, stamps.length, 1).setNumberFormat('@').setValues(stamps);
  }
  var ref = bridgeRef_(columns);
  var sent = 0;
  try {
    withLock_('Status edit', function () {
      if (newValues.length > MAX_EDITS_PER_RUN_) {
        // A big paste: one full pass instead of one call per row (the 6-minute limit).
        callBackend_('post', '/api/sync', ref);
        sent = newValues.length;
        return;
      }
      for (var i = 0; i < newValues.length; i++) {
        callBackend_('post', '/api/edits', {
          spreadsheet_id: ref.spreadsheet_id,
          tab: columns.tab,
          row: first + i,
          // A multi-cell paste carries no old values; the backend treats null as unknown.
          old_value: single && e.oldValue !== undefined ? String(e.oldValue) : null,
          new_value: String(newValues[i][0]),
          at: at,
        });
        sent++;
      }
    });
    clearError_();
  } catch (err) {
    var left = newValues.length - sent;
    report_(
      'edit',
      err.message + ' (' + left + ' status change' + (left === 1 ? '' : 's') + ' stamped but not sent yet: the next sync sends ' + (left === 1 ? 'it' : 'them') + ')',
    );
    throw err;
  }
}

/** The hourly safety net: a full pass. A failure is recorded for the sidebar and rethrown so
 * Apps Script marks the execution failed and e-mails the trigger's owner. */
function hourlySync() {
  try {
    withLock_('Hourly sync', function () {
      return callBackend_('post', '/api/sync', bridgeRef_());
    });
    clearError_();
  } catch (err) {
    report_('hourly sync', err.message);
    throw err;
  }
}

// ---- backend calls ----------------------------------------------------------------------

function bridgeRef_(columns) {
  var ref = { spreadsheet_id: SpreadsheetApp.getActive().getId() };
  columns = columns || cachedColumns_();
  if (columns && columns.tab) ref.tab = columns.tab;
  return ref;
}

function fetchStatus_() {
  var ref = bridgeRef_();
  var query = '?spreadsheet_id=' + encodeURIComponent(ref.spreadsheet_id) + (ref.tab ? '&tab=' + encodeURIComponent(ref.tab) : '');
  var status = withLock_('Status', function () {
    return callBackend_('get', '/api/status' + query);
  });
  cacheColumns_(status);
  return status;
}

/** The funnel report for the sidebar's panel: weekly counts (with an SVG chart) and advice. */
function getReport() {
  var ref = bridgeRef_();
  var query = '?spreadsheet_id=' + encodeURIComponent(ref.spreadsheet_id) + (ref.tab ? '&tab=' + encodeURIComponent(ref.tab) : '');
  return withLock_('Report', function () {
    return callBackend_('get', '/api/report' + query);
  });
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
    fetched_at: new Date().getTime(),
  };
  PropertiesService.getDocumentProperties().setProperty(PROPS_.columns, JSON.stringify(columns));
  return columns;
}

/** The backend's column names as last fetched; null when absent or (unless allowStale) old. */
function cachedColumns_(allowStale) {
  var columns = readJson_(PROPS_.columns);
  if (!columns || !columns.tab) return null;
  if (!allowStale && new Date().getTime() - columns.fetched_at > COLUMNS_TTL_MS_) return null;
  return columns;
}

/** Serialise this document's backend calls (an edit and the hourly pass never overlap). */
function withLock_(what, fn) {
  // getDocumentLock is null outside a document (e.g. run from the editor); fall back.
  var lock = LockService.getDocumentLock() || LockService.getScriptLock();
  if (!lock.tryLock(LOCK_WAIT_MS_)) {
    throw new Error(what + ': another sheet-bridge run in this spreadsheet is still busy; try again in a minute.');
  }
  try {
    return fn();
  } finally {
    lock.releaseLock();
  }
}

function authorization_() {
  var props = PropertiesService.getDocumentProperties();
  var mode = props.getProperty(PROPS_.authMode) || 'id_token';
  if (mode === 'secret') {
    var secret = props.getProperty(PROPS_.secret);
    if (!secret) throw new Error('No shared secret is set: enter it in the sidebar Settings.');
    return 'Bearer ' + secret;
  }
  return 'Bearer ' + ScriptApp.getIdentityToken();
}

/** One request to the backend; the parsed JSON, or an Error saying what went wrong and what to do. */
function callBackend_(method, path, body) {
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
  var code = response.getResponseCode();
  var text = response.getContentText();
  var data = null;
  try {
    data = JSON.parse(text);
  } catch (ignored) {
    data = null; // described below with the status code and the start of the body
  }
  if (code >= 200 && code < 300 && data !== null) return data;
  throw new Error(failureWords_(code, data, text));
}

function failureWords_(code, data, text) {
  var err = data && data.error ? data.error : null;
  var said = err ? err.message + ' (' + err.code + ', HTTP ' + code + ')' : 'HTTP ' + code + ': ' + String(text).slice(0, 200);
  if (code === 401) {
    return 'The backend refused the credentials: ' + said + '. Check the shared secret in Settings (it must equal SHEET_BRIDGE_SECRET on the backend), or for Google sign-in that the backend\'s id_token_audience matches this script.';
  }
  if (code === 403) return 'The backend refused this account: ' + said + '. Ask the backend\'s owner to add your e-mail to allowed_emails.';
  if (code === 404) return 'The backend does not know this spreadsheet: ' + said + '. Check spreadsheet_id and tab in the backend\'s config.';
  if (code === 409) return 'A sync of this spreadsheet is already running: ' + said + '.';
  if (code >= 500) return 'The sheet-bridge backend failed: ' + said + '. Nothing was lost: the next sync retries.';
  if (code >= 200 && code < 300) return 'The backend answered something that is not JSON: ' + said;
  return 'The backend rejected the request: ' + said;
}

// ---- words and bookkeeping --------------------------------------------------------------

function summaryWords_(summary) {
  var parts = ['sent', 'already_sent', 'expired', 'invalid', 'skipped', 'failed'].map(function (k) {
    return (k === 'already_sent' ? 'up to date' : k) + ' ' + (summary[k] || 0);
  });
  return 'Sync done: ' + parts.join(' · ') + '. ' + (summary.events_sent || 0) + ' event(s) sent to Meta.';
}

function report_(where, message) {
  PropertiesService.getDocumentProperties().setProperty(
    PROPS_.lastError,
    JSON.stringify({ at: new Date().toISOString(), where: where, message: message }),
  );
  toast_(message, 'sheet-bridge: ' + where + ' failed');
  console.error('sheet-bridge ' + where + ': ' + message);
}

function clearError_() {
  PropertiesService.getDocumentProperties().deleteProperty(PROPS_.lastError);
}

function toast_(message, title) {
  SpreadsheetApp.getActive().toast(message, title || TITLE_, 10);
}

function triggerCounts_() {
  var counts = { onEdit: 0, hourly: 0 };
  ScriptApp.getProjectTriggers().forEach(function (t) {
    if (t.getHandlerFunction() === EDIT_HANDLER_) counts.onEdit++;
    if (t.getHandlerFunction() === HOURLY_HANDLER_) counts.hourly++;
  });
  return counts;
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
