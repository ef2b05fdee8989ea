/* A local stand-in for the Apps Script services sidebar/Code.gs uses, backed by the Sheets
 * emulator over real HTTP. One file serves the Node tests (tests/sidebar) and the playground
 * page, so both run the real Code.gs against the same stand-in.
 *
 * It is meant to be as unkind as Google (each rule cites where Google documents it):
 * - Edit events (developers.google.com/apps-script/guides/triggers/events): `value` and
 *   `oldValue` exist only when the edited range is one cell; a paste, fill-down, sort or a
 *   multi-cell clear is one event over the whole range without them.
 * - Triggers are per user (ScriptApp.getProjectTriggers: "associated with the current project
 *   and current user") and an installable trigger runs as the person who created it.
 * - Document Properties are one store for everyone; User Properties are per person.
 * - LockService: a lock held by another execution makes tryLock wait its timeout and return
 *   false (waitLock throws). One JS thread cannot wait, so it answers at once and records the
 *   wait it would have made (state.lockWaits). The user, script and document locks are three
 *   different locks (reference/lock/lock-service): the user lock is each person's own, the
 *   script lock one for everyone, the document lock one per document. Locks belong to an
 *   execution and go when it ends.
 * - Each execution (a trigger run, a menu click, a google.script.run call) loads the script
 *   afresh: no global variable survives from one run to the next (what must last goes to the
 *   Properties service, guides/properties).
 * - Executions overlap: an edit trigger can run while the hourly one waits on UrlFetchApp
 *   (which is why LockService exists). `meanwhile(fn)` runs fn as another execution while the
 *   next UrlFetchApp call of any execution is on its way.
 * - Trigger runtime is counted per person against the daily quota (guides/services/quotas:
 *   90 min/day for consumer accounts, 6 h/day for Google Workspace, users[email].workspace);
 *   past it the person's triggers do not run and the execution fails with Google's words.
 *   `timeScale` says how much faster than real time a test plays (runtime is divided by it).
 * - HtmlService.createHtmlOutputFromFile finds only the project's HTML files (`htmlFiles`,
 *   named as the editor shows them, e.g. "sidebar/Sidebar"); any other name throws.
 * - Range.getValues gives Date objects for date cells (Number, Boolean, Date or String). Cell
 *   formats live in the Sheets emulator, as in Sheets: a date is a serial number in a cell with
 *   a date format (developers.google.com/sheets/api/guides/formats), so setNumberFormat is a
 *   repeatCell, a sort is a sortRange that moves formats with their rows, and what a person
 *   types goes in USER_ENTERED, which makes "2026-12-03 10:15" a date cell.
 * - UrlFetchApp: with a urlFetchWhitelist in the manifest only URLs under its prefixes are
 *   fetched, and every prefix must be https with a path (manifest/allowlist-url); a call gives
 *   up after about 60 s. Nothing leaves this machine: `routes` says where each allowed https
 *   prefix is served locally.
 * - ScriptApp.getIdentityToken returns null when no identity token was granted (String|null).
 *
 * UrlFetchApp.fetch and every sheet read/write are synchronous, as in Apps Script: the caller
 * supplies `http(request) -> {status, headers, body}` that blocks (a synchronous XHR in the
 * browser; a worker + Atomics.wait in Node). Only what Code.gs calls is emulated; anything else
 * is a TypeError, which is the point: Code.gs must not grow a dependency the stand-in lacks.
 */
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.AppsScriptLocal = factory();
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  var FETCH_DEADLINE_MS = 60000;
  var DAY_MS = 86400000;
  var SERIAL_EPOCH_MS = Date.UTC(1899, 11, 30); // Sheets' day 0

  function colLetter(col) {
    var s = '';
    while (col > 0) {
      var m = (col - 1) % 26;
      s = String.fromCharCode(65 + m) + s;
      col = Math.floor((col - 1) / 26);
    }
    return s;
  }

  function quoteTab(tab) {
    return "'" + tab.replace(/'/g, "''") + "'";
  }

  function a1(tab, row, col, numRows, numCols) {
    var start = colLetter(col) + row;
    var end = colLetter(col + numCols - 1) + (row + numRows - 1);
    return quoteTab(tab) + '!' + start + (end === start ? '' : ':' + end);
  }

  /** The wall-clock parts of `date` in an IANA zone, and that zone's offset in minutes. */
  function zoned(date, timeZone) {
    var parts = {};
    new Intl.DateTimeFormat('en-US', {
      timeZone: timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    })
      .formatToParts(date)
      .forEach(function (p) {
        parts[p.type] = p.value;
      });
    var asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    parts.offsetMin = Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
    return parts;
  }

  /** "yyyy-MM-dd'T'HH:mm:ssXXX" and the few other patterns Code.gs uses, in an IANA zone. */
  function formatDate(date, timeZone, pattern) {
    var parts = zoned(date, timeZone);
    var offsetMin = parts.offsetMin;
    var sign = offsetMin < 0 ? '-' : '+';
    var abs = Math.abs(offsetMin);
    var hhmm = String(Math.floor(abs / 60)).padStart(2, '0') + ':' + String(abs % 60).padStart(2, '0');
    var tokens = {
      yyyy: parts.year,
      MM: parts.month,
      dd: parts.day,
      HH: parts.hour,
      mm: parts.minute,
      ss: parts.second,
      XXX: offsetMin === 0 ? 'Z' : sign + hhmm,
      Z: sign + hhmm.replace(':', ''),
    };
    // Utilities.formatDate takes SimpleDateFormat patterns, where every unquoted letter A-Z,
    // a-z is a pattern letter (docs.oracle.com/javase/8/docs/api/java/text/SimpleDateFormat.html):
    // a letter not emulated here throws, never passes through as text.
    var out = '';
    var re = /'([^']*)'|yyyy|MM|dd|HH|mm|ss|XXX|Z|[A-Za-z]+|[^'A-Za-z]+/g;
    var m;
    while ((m = re.exec(pattern)) !== null) {
      if (m[1] !== undefined) out += m[1];
      else if (tokens[m[0]] !== undefined) out += tokens[m[0]];
      else if (/^[A-Za-z]/.test(m[0])) throw new Error('formatDate: pattern not emulated: ' + pattern);
      else out += m[0];
    }
    return out;
  }

  /** The instant a serial date-time (days since 1899-12-30, wall clock) means in `timeZone`. */
  function serialToDate(serial, timeZone) {
    var wall = SERIAL_EPOCH_MS + Math.round(serial * DAY_MS);
    // The zone's offset at that wall time (twice: the first guess may sit across a DST change).
    var guess = wall - zoned(new Date(wall), timeZone).offsetMin * 60000;
    return new Date(wall - zoned(new Date(guess), timeZone).offsetMin * 60000);
  }

  /** Range.setNumberFormat's pattern as the Sheets API's NumberFormat {type, pattern}. */
  function numberFormat(pattern) {
    if (pattern === '@') return { type: 'TEXT', pattern: '@' };
    var bare = pattern.replace(/"[^"]*"/g, '');
    if (/[yd]/i.test(bare)) return { type: /[hs]/i.test(bare) ? 'DATE_TIME' : 'DATE', pattern: pattern };
    if (/[hs]/i.test(bare)) return { type: 'TIME', pattern: pattern };
    return { type: 'NUMBER', pattern: pattern };
  }

  function Properties(store) {
    return {
      getProperty: function (k) {
        return Object.prototype.hasOwnProperty.call(store, k) ? store[k] : null;
      },
      setProperty: function (k, v) {
        store[k] = String(v);
        return this;
      },
      setProperties: function (obj) {
        Object.keys(obj).forEach(function (k) {
          store[k] = String(obj[k]);
        });
        return this;
      },
      deleteProperty: function (k) {
        delete store[k];
        return this;
      },
      getProperties: function () {
        return Object.assign({}, store);
      },
      getKeys: function () {
        return Object.keys(store);
      },
    };
  }

  /** Check a manifest's urlFetchWhitelist as Google does when the project is saved. */
  function checkAllowlist(prefixes) {
    (prefixes || []).forEach(function (p) {
      if (!/^https:\/\/(\*\.)?[^/*\s]+\/\S*$/.test(p)) {
        throw new Error('urlFetchWhitelist: "' + p + '" must be an https:// URL prefix with a full domain and a path (at least "/")');
      }
    });
    return prefixes || null;
  }

  function allowed(url, prefixes) {
    if (!prefixes) return true;
    return prefixes.some(function (p) {
      var wild = /^https:\/\/\*\.(.*)$/.exec(p);
      if (!wild) return url.indexOf(p) === 0;
      var m = /^https:\/\/([^/]+)(\/.*)?$/.exec(url);
      var rest = wild[1];
      var host = rest.split('/')[0];
      return !!m && m[1].slice(-host.length - 1) === '.' + host && (m[2] || '/').indexOf(rest.slice(host.length) || '/') === 0;
    });
  }

  /**
   * The Apps Script world of one spreadsheet in the emulator, shared by everyone who uses it.
   *
   * options: http (required), sheetsUrl (emulator base, or '/sheets' behind the playground),
   * spreadsheetId, activeTab, source (Code.gs text), loader(source, globals) -> functions
   * (default: `load`), manifest ({urlFetchWhitelist}), routes ({'https://prefix/': 'http://local/'}),
   * users ({email: {identityToken: string|null, workspace: bool}}), fetchDeadlineMs (default
   * 60 000), timeScale (default 1: a test's real milliseconds are 1/timeScale Apps Script
   * ones), htmlFiles (the project's HTML file names, default none),
   * projectName (what createAddonMenu is named in a bound script, default "Untitled project"),
   * hooks: {toast(msg, title), showSidebar(html), activate(tab, row, col), menu(title, items),
   * fetched({user, method, url, status, ms, error})}.
   */
  function create(options) {
    var http = options.http;
    var base = options.sheetsUrl.replace(/\/$/, '') + '/v4/spreadsheets/' + encodeURIComponent(options.spreadsheetId);
    var hooks = options.hooks || {};
    var allowlist = checkAllowlist(options.manifest && options.manifest.urlFetchWhitelist);
    var routes = options.routes || {};
    var deadlineMs = options.fetchDeadlineMs || FETCH_DEADLINE_MS;
    var users = options.users || {};
    var timeScale = options.timeScale || 1;
    var htmlFiles = options.htmlFiles || [];
    var state = {
      documentProperties: {},
      userProperties: {}, // by e-mail
      scriptProperties: {},
      triggers: [], // {id, owner, spec}
      nextTriggerId: 4034124084959907503n,
      locks: { document: null, script: null, user: {} }, // the execution id holding each, or 'elsewhere'
      triggerRuntime: {}, // by e-mail: {since, ms} of trigger runtime in the quota's day
      meanwhile: [], // executions to run while the next UrlFetchApp call waits
      nextExecution: 1,
      lockWaits: [], // {user, ms}: how long a tryLock/waitLock would have waited
      toasts: [],
      fetches: [],
      executions: [], // {id, user, name, trigger, ok, error, ms}
      menus: [],
      timeZone: null,
    };

    function sheetsCall(method, path, body) {
      var res = http({
        method: method,
        url: base + path,
        headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      var data = res.body ? JSON.parse(res.body) : {};
      if (res.status >= 400) {
        var msg = (data.error && data.error.message) || 'HTTP ' + res.status;
        // Apps Script throws the service's message for a failed read or write.
        throw new Error('Service Spreadsheets failed while accessing document with id ' + options.spreadsheetId + ': ' + msg);
      }
      return data;
    }

    function book() {
      var fields = 'properties(title,timeZone),sheets.properties(title,sheetId)';
      var got = sheetsCall('GET', '?fields=' + encodeURIComponent(fields));
      state.timeZone = got.properties.timeZone;
      return got;
    }

    function timeZone() {
      return state.timeZone || book().properties.timeZone;
    }

    function sheetId(tab) {
      var found = (book().sheets || []).filter(function (s) { return s.properties.title === tab; })[0];
      if (!found) throw new Error('Sheet not found: ' + tab);
      return found.properties.sheetId;
    }

    /** A block's values, a date cell as a Date. Which numbers are dates only their cells'
     * formats say: a second read with dateTimeRenderOption=FORMATTED_STRING gives those as
     * text (made only when the block holds a number). */
    function readBlock(tab, row, col, numRows, numCols) {
      var path = '/values/' + encodeURIComponent(a1(tab, row, col, numRows, numCols)) + '?valueRenderOption=UNFORMATTED_VALUE';
      var values = sheetsCall('GET', path).values || [];
      var hasNumber = values.some(function (line) { return line.some(function (v) { return typeof v === 'number'; }); });
      var shown = hasNumber ? sheetsCall('GET', path + '&dateTimeRenderOption=FORMATTED_STRING').values || [] : [];
      var out = [];
      for (var r = 0; r < numRows; r++) {
        var line = [];
        for (var c = 0; c < numCols; c++) {
          var v = values[r] && values[r][c];
          if (v === undefined || v === null) v = ''; // Apps Script pads to the rectangle with ''
          else if (typeof v === 'number' && shown[r] && typeof shown[r][c] === 'string') {
            v = serialToDate(v, timeZone());
          }
          line.push(v);
        }
        out.push(line);
      }
      return out;
    }

    /** Write a block as Apps Script's setValues does: as if typed (USER_ENTERED, so a cell
     * formatted as plain text keeps text), a Date as the date-time it is in the sheet's zone. */
    function writeBlock(tab, row, col, values) {
      var stored = values.map(function (line) {
        return line.map(function (v) {
          if (Object.prototype.toString.call(v) === '[object Date]') return formatDate(v, timeZone(), 'yyyy-MM-dd HH:mm:ss');
          return v;
        });
      });
      var range = a1(tab, row, col, values.length, values[0].length);
      sheetsCall('PUT', '/values/' + encodeURIComponent(range) + '?valueInputOption=USER_ENTERED', { values: stored });
    }

    function gridRange(tab, row, col, numRows, numCols) {
      return { sheetId: sheetId(tab), startRowIndex: row - 1, endRowIndex: row - 1 + numRows, startColumnIndex: col - 1, endColumnIndex: col - 1 + numCols };
    }

    function tabRows(tab) {
      var got = sheetsCall('GET', '/values/' + encodeURIComponent(quoteTab(tab)) + '?valueRenderOption=UNFORMATTED_VALUE');
      return got.values || [];
    }

    function Range(sheet, row, col, numRows, numCols) {
      var tab = sheet.getName();
      return {
        getSheet: function () {
          return sheet;
        },
        getRow: function () {
          return row;
        },
        getColumn: function () {
          return col;
        },
        getLastRow: function () {
          return row + numRows - 1;
        },
        getLastColumn: function () {
          return col + numCols - 1;
        },
        getNumRows: function () {
          return numRows;
        },
        getNumColumns: function () {
          return numCols;
        },
        getA1Notation: function () {
          return a1(tab, row, col, numRows, numCols).split('!')[1];
        },
        getValues: function () {
          return readBlock(tab, row, col, numRows, numCols);
        },
        getValue: function () {
          return readBlock(tab, row, col, 1, 1)[0][0];
        },
        setValues: function (values) {
          if (values.length !== numRows || values.some(function (r) { return r.length !== numCols; })) {
            throw new Error('The number of rows or columns in the data does not match the range.');
          }
          writeBlock(tab, row, col, values);
          return this;
        },
        setValue: function (value) {
          writeBlock(tab, row, col, [[value]]);
          return this;
        },
        setNumberFormat: function (format) {
          sheetsCall('POST', ':batchUpdate', {
            requests: [{
              repeatCell: {
                range: gridRange(tab, row, col, numRows, numCols),
                cell: { userEnteredFormat: { numberFormat: numberFormat(String(format)) } },
                fields: 'userEnteredFormat.numberFormat',
              },
            }],
          });
          return this;
        },
        activate: function () {
          if (hooks.activate) hooks.activate(tab, row, col);
          return this;
        },
      };
    }

    var sheets = {};
    function Sheet(tab) {
      if (sheets[tab]) return sheets[tab];
      var sheet = {
        getName: function () {
          return tab;
        },
        getLastRow: function () {
          return tabRows(tab).length;
        },
        getLastColumn: function () {
          return tabRows(tab).reduce(function (w, r) { return Math.max(w, r.length); }, 0);
        },
        getRange: function (row, col, numRows, numCols) {
          if (typeof row === 'string') throw new Error('getRange(a1) is not emulated; use (row, column)');
          if (!(row >= 1 && col >= 1)) throw new Error('The coordinates of the range are outside the dimensions of the sheet.');
          return Range(sheet, row, col, numRows || 1, numCols || 1);
        },
        setActiveSelection: function (range) {
          return range.activate();
        },
        activate: function () {
          return sheet;
        },
      };
      sheets[tab] = sheet;
      return sheet;
    }

    var ss = {
      getId: function () {
        return options.spreadsheetId;
      },
      getName: function () {
        return book().properties.title;
      },
      getUrl: function () {
        return 'https://docs.google.com/spreadsheets/d/' + options.spreadsheetId + '/edit';
      },
      getSpreadsheetTimeZone: function () {
        return book().properties.timeZone;
      },
      getSheetByName: function (name) {
        var titles = (book().sheets || []).map(function (s) { return s.properties.title; });
        return titles.indexOf(name) === -1 ? null : Sheet(name);
      },
      getSheets: function () {
        return (book().sheets || []).map(function (s) { return Sheet(s.properties.title); });
      },
      getActiveSheet: function () {
        return Sheet(options.activeTab || book().sheets[0].properties.title);
      },
      toast: function (msg, title) {
        state.toasts.push({ message: String(msg), title: title ? String(title) : '' });
        if (hooks.toast) hooks.toast(String(msg), title ? String(title) : '');
      },
    };

    function Menu(title) {
      var menu = { title: title, items: [] };
      return {
        addItem: function (caption, fn) {
          menu.items.push({ caption: caption, functionName: fn });
          return this;
        },
        addSeparator: function () {
          return this;
        },
        addToUi: function () {
          state.menus.push(menu);
          if (hooks.menu) hooks.menu(menu.title, menu.items);
        },
      };
    }

    var ui = {
      createMenu: function (title) {
        return Menu(String(title));
      },
      // In a bound script the add-on menu carries the script project's name
      // (developers.google.com/apps-script/reference/base/ui#createAddonMenu()).
      createAddonMenu: function () {
        return Menu(options.projectName || 'Untitled project');
      },
      showSidebar: function (html) {
        if (hooks.showSidebar) hooks.showSidebar(html);
      },
      alert: function (msg) {
        ss.toast(msg, 'alert');
      },
    };

    var EventType = { ON_EDIT: 'ON_EDIT', CLOCK: 'CLOCK', ON_OPEN: 'ON_OPEN' };

    function TriggerBuilder(owner, handler) {
      var spec = { handler: handler };
      var builder = {
        forSpreadsheet: function () {
          spec.source = 'SPREADSHEETS';
          return {
            onEdit: function () {
              spec.type = EventType.ON_EDIT;
              return builder;
            },
            onOpen: function () {
              spec.type = EventType.ON_OPEN;
              return builder;
            },
          };
        },
        timeBased: function () {
          spec.type = EventType.CLOCK;
          spec.source = 'CLOCK';
          return {
            everyHours: function (n) {
              if ([1, 2, 4, 6, 8, 12].indexOf(n) === -1) throw new Error('everyHours: 1, 2, 4, 6, 8 or 12');
              spec.everyHours = n;
              return builder;
            },
            everyMinutes: function (n) {
              spec.everyMinutes = n;
              return builder;
            },
            create: function () {
              return builder.create();
            },
          };
        },
        create: function () {
          if (!spec.type) throw new Error('a trigger needs an event type');
          var id = String(state.nextTriggerId++);
          state.triggers.push({ id: id, owner: owner, spec: spec });
          return Trigger(state.triggers[state.triggers.length - 1]);
        },
      };
      return builder;
    }

    function Trigger(t) {
      return {
        id: t.id,
        owner: t.owner,
        spec: t.spec,
        getUniqueId: function () { return t.id; },
        getHandlerFunction: function () { return t.spec.handler; },
        getEventType: function () { return t.spec.type; },
        getTriggerSource: function () { return t.spec.source; },
      };
    }

    /** Where a lock of `kind` is held: state.locks[kind], per person for the user lock. */
    function lockSlot(kind, user) {
      if (kind !== 'user') {
        return {
          get: function () { return state.locks[kind]; },
          set: function (v) { state.locks[kind] = v; },
        };
      }
      return {
        get: function () { return state.locks.user[user] === undefined ? null : state.locks.user[user]; },
        set: function (v) {
          if (v === null) delete state.locks.user[user];
          else state.locks.user[user] = v;
        },
      };
    }

    function Lock(kind, execution) {
      var slot = lockSlot(kind, execution.user);
      var mine = false;
      function attempt(ms) {
        if (slot.get() === null) {
          slot.set(execution.id);
          mine = true;
          return true;
        }
        // Held by another execution: Apps Script would wait `ms` and give up. One JS thread
        // cannot wait for it, so say no at once and record the wait.
        state.lockWaits.push({ user: execution.user, kind: kind, ms: Number(ms) || 0 });
        return false;
      }
      return {
        tryLock: function (ms) {
          return attempt(ms);
        },
        waitLock: function (ms) {
          if (!attempt(ms)) throw new Error('Lock timeout: another process was holding the lock for too long.');
        },
        hasLock: function () {
          return mine;
        },
        releaseLock: function () {
          if (mine) {
            mine = false;
            slot.set(null);
          }
        },
      };
    }

    /** Every lock an execution still holds goes when it ends. */
    function releaseAll(id) {
      ['document', 'script'].forEach(function (kind) {
        if (state.locks[kind] === id) state.locks[kind] = null;
      });
      Object.keys(state.locks.user).forEach(function (u) {
        if (state.locks.user[u] === id) delete state.locks.user[u];
      });
    }

    function HTTPResponse(res) {
      return {
        getResponseCode: function () { return res.status; },
        getContentText: function () { return res.body || ''; },
        getHeaders: function () { return res.headers || {}; },
      };
    }

    /** Where an allowed URL is served on this machine; null when nowhere (unreachable). */
    function routed(url) {
      var best = null;
      Object.keys(routes).forEach(function (prefix) {
        if (url.indexOf(prefix) === 0 && (!best || prefix.length > best.length)) best = prefix;
      });
      return best === null ? null : routes[best] + url.slice(best.length);
    }

    function fetchAs(user, url, params) {
      params = params || {};
      url = String(url);
      if (!/^https?:\/\/[^/\s]+/.test(url)) throw new Error('Invalid argument: url');
      if (!allowed(url, allowlist)) {
        // The wording is ours; Apps Script refuses such a fetch before it leaves.
        throw new Error('UrlFetchApp: ' + url + ' is not under a urlFetchWhitelist prefix of appsscript.json (' + allowlist.join(', ') + ')');
      }
      var headers = Object.assign({}, params.headers || {});
      if (params.contentType) headers['Content-Type'] = params.contentType;
      var method = (params.method || 'get').toUpperCase();
      var started = Date.now();
      var target = routed(url);
      var entry = { user: user, method: method, url: url, params: params };
      state.fetches.push(entry);
      function fail(message) {
        entry.error = message;
        if (hooks.fetched) hooks.fetched({ user: user, method: method, url: url, error: message, ms: Date.now() - started });
        throw new Error(message);
      }
      if (target === null) fail('Address unavailable: ' + url); // nothing leaves this machine
      // Other executions go on while this one waits for its answer.
      state.meanwhile.splice(0).forEach(function (other) {
        other();
      });
      var res;
      try {
        res = http({ method: method, url: target, headers: headers, body: params.payload, timeoutMs: deadlineMs });
      } catch (err) {
        fail(Date.now() - started >= deadlineMs ? 'Timeout: ' + url : 'Address unavailable: ' + url);
      }
      // A browser's synchronous XHR cannot be cut short: an answer later than the deadline is
      // one Apps Script never saw (the server went on working; the caller gave up).
      if (Date.now() - started > deadlineMs) fail('Timeout: ' + url);
      entry.status = res.status;
      entry.body = res.body;
      if (hooks.fetched) hooks.fetched({ user: user, method: method, url: url, status: res.status, ms: Date.now() - started });
      if (res.status >= 400 && !params.muteHttpExceptions) {
        throw new Error('Request failed for ' + url + ' returned code ' + res.status + '. Truncated server response: ' + String(res.body).slice(0, 100));
      }
      return HTTPResponse(res);
    }

    function identityToken(user) {
      var u = users[user];
      return u && typeof u.identityToken === 'string' && u.identityToken ? u.identityToken : null;
    }

    /** The globals one execution sees (`execution.user` is who it runs as). */
    function globalsFor(execution) {
      var user = execution.user;
      if (!state.userProperties[user]) state.userProperties[user] = {};
      var person = { getEmail: function () { return user; } };
      return {
        SpreadsheetApp: {
          getActive: function () { return ss; },
          getActiveSpreadsheet: function () { return ss; },
          getUi: function () { return ui; },
          flush: function () {},
        },
        PropertiesService: {
          getDocumentProperties: function () { return Properties(state.documentProperties); },
          getUserProperties: function () { return Properties(state.userProperties[user]); },
          getScriptProperties: function () { return Properties(state.scriptProperties); },
        },
        LockService: {
          getDocumentLock: function () { return Lock('document', execution); },
          getScriptLock: function () { return Lock('script', execution); },
          getUserLock: function () { return Lock('user', execution); },
        },
        ScriptApp: {
          EventType: EventType,
          AuthMode: { FULL: 'FULL', LIMITED: 'LIMITED', NONE: 'NONE' },
          newTrigger: function (handler) { return TriggerBuilder(user, handler); },
          getProjectTriggers: function () {
            return state.triggers.filter(function (t) { return t.owner === user; }).map(Trigger);
          },
          deleteTrigger: function (trigger) {
            var t = state.triggers.filter(function (x) { return x.id === trigger.getUniqueId(); })[0];
            if (t && t.owner !== user) throw new Error('Only ' + t.owner + ' can delete this trigger.');
            state.triggers = state.triggers.filter(function (x) { return x !== t; });
          },
          getIdentityToken: function () { return identityToken(user); },
          getOAuthToken: function () { return 'local-oauth-token'; },
        },
        Utilities: {
          formatDate: formatDate,
          sleep: function () {},
        },
        HtmlService: {
          createHtmlOutputFromFile: function (name) {
            if (htmlFiles.indexOf(String(name)) === -1) throw new Error('No HTML file named ' + name + ' was found.');
            var out = {
              file: name,
              title: '',
              setTitle: function (t) { out.title = t; return out; },
              setWidth: function () { return out; },
            };
            return out;
          },
        },
        Session: {
          getActiveUser: function () { return person; },
          getEffectiveUser: function () { return person; },
          getScriptTimeZone: function () { return 'Etc/UTC'; },
        },
        UrlFetchApp: {
          fetch: function (url, params) { return fetchAs(user, url, params); },
        },
        Logger: { log: function () { console.log.apply(console, arguments); } },
        console: console,
      };
    }

    /** The script's top-level functions as `user` would load them, for a caller that asks
     * which exist (google.script.run refuses the others). Runs nothing of its own. */
    function session(user) {
      if (!user) throw new Error('session: which user?');
      var code = options.source ? (options.loader || load)(options.source, globalsFor({ id: 0, user: user })) : null;
      return { user: user, code: code };
    }

    var DAY_MS_QUOTA = 24 * 3600 * 1000;
    var CONSUMER_TRIGGER_MS = 90 * 60 * 1000;
    var WORKSPACE_TRIGGER_MS = 6 * 3600 * 1000;

    /** A person's trigger runtime in the quota's day (it resets a day after it began). */
    function runtimeOf(user) {
      var used = state.triggerRuntime[user];
      if (!used || Date.now() - used.since > DAY_MS_QUOTA * timeScale) {
        used = state.triggerRuntime[user] = { since: Date.now(), ms: 0 };
      }
      return used;
    }

    function triggerQuotaMs(user) {
      return users[user] && users[user].workspace ? WORKSPACE_TRIGGER_MS : CONSUMER_TRIGGER_MS;
    }

    /** Run one Code.gs function as `user`, as one Apps Script execution (a menu click, a
     * google.script.run call or, with asTrigger, a trigger): the script is loaded afresh, the
     * locks it still holds go at its end, and a trigger's runtime counts against its owner's
     * daily quota (a trigger past it does not run). */
    function run(user, name, args, asTrigger) {
      var record = { id: state.nextExecution++, user: user, name: name, trigger: !!asTrigger, ok: true };
      state.executions.push(record);
      if (asTrigger && runtimeOf(user).ms >= triggerQuotaMs(user)) {
        record.ok = false;
        record.error = 'Service using too much computer time for one day';
        throw new Error(record.error);
      }
      var started = Date.now();
      try {
        var code = options.source ? (options.loader || load)(options.source, globalsFor(record)) : null;
        var fn = code && code[name];
        if (typeof fn !== 'function') throw new Error('Script function not found: ' + name);
        return fn.apply(null, args || []);
      } catch (err) {
        record.ok = false;
        record.error = err.message;
        throw err;
      } finally {
        record.ms = (Date.now() - started) / timeScale;
        if (asTrigger) runtimeOf(user).ms += record.ms;
        releaseAll(record.id);
      }
    }

    /** Earlier trigger runs of `user` today took `ms` of their quota. */
    function chargeTriggerRuntime(user, ms) {
      runtimeOf(user).ms += ms;
    }

    /** Run `fn` (which runs executions: w.run, w.fireClock…) while the next UrlFetchApp call
     * of any execution waits for its answer: two executions at the same time. */
    function meanwhile(fn) {
      state.meanwhile.push(fn);
    }

    /** Another execution (an hourly pass, another editor's call) holds a lock (`kind`:
     * document (default), script, or user with `user`) until the returned function is called. */
    function holdLock(kind, user) {
      var slot = lockSlot(kind || 'document', user);
      if (slot.get() !== null) throw new Error('the lock is already held');
      slot.set('elsewhere');
      return function release() {
        if (slot.get() === 'elsewhere') slot.set(null);
      };
    }

    /** Sheets storing what a person typed: USER_ENTERED, so the emulator makes a typed date
     * ("2026-12-03 10:15", or "12/3/2026" in an en_US sheet) a date cell, as Sheets does. */
    function storeTyped(tab, row, col, values) {
      writeBlock(tab, row, col, values);
    }

    function editEvent(editor, tab, row, col, numRows, numCols, values) {
      var e = {
        authMode: 'FULL',
        range: Sheet(tab).getRange(row, col, numRows, numCols),
        source: ss,
        user: { getEmail: function () { return editor || ''; } },
      };
      if (values) {
        // One cell only: the new value ("" cleared → absent) and the one it replaced.
        if (values.value !== '' && values.value !== undefined) e.value = String(values.value);
        if (values.oldValue !== '' && values.oldValue !== undefined) e.oldValue = String(values.oldValue);
      }
      return e;
    }

    /** Run every installed trigger of `type`, each as the person who created it. Every trigger
     * runs even when one fails (Apps Script runs them apart); the first failure is rethrown. */
    function fire(type, makeEvent) {
      var ran = [];
      var failure = null;
      state.triggers
        .filter(function (t) { return t.spec.type === type; })
        .forEach(function (t) {
          var e = makeEvent();
          e.triggerUid = t.id;
          ran.push({ handler: t.spec.handler, owner: t.owner, id: t.id });
          try {
            run(t.owner, t.spec.handler, [e], true);
          } catch (err) {
            if (!failure) failure = err;
          }
        });
      if (failure) throw failure;
      return ran;
    }

    /** A person types `value` into one cell; the installed onEdit triggers run. */
    function userTypes(editor, tab, row, col, value) {
      var old = readBlock(tab, row, col, 1, 1)[0][0];
      storeTyped(tab, row, col, [[value]]);
      return fire(EventType.ON_EDIT, function () {
        return editEvent(editor, tab, row, col, 1, 1, { value: value, oldValue: displayed(old) });
      });
    }

    /** A person pastes a block (or fills down, or clears a range): one event, no values. */
    function userPastes(editor, tab, row, col, values) {
      storeTyped(tab, row, col, values);
      return fire(EventType.ON_EDIT, function () {
        return editEvent(editor, tab, row, col, values.length, values[0].length, null);
      });
    }

    /** A person sorts the data rows (2…) by one column (Data → Sort range): a sortRange, so
     * the rows move with their cells' formats, and one edit event covers the sorted range
     * (sorting often fires one, developers.google.com/apps-script/guides/triggers/events). */
    function userSorts(editor, tab, col, descending) {
      var rows = tabRows(tab);
      var width = rows.reduce(function (w, r) { return Math.max(w, r.length); }, 0);
      if (rows.length < 2) return [];
      sheetsCall('POST', ':batchUpdate', {
        requests: [{
          sortRange: {
            range: gridRange(tab, 2, 1, rows.length - 1, width),
            sortSpecs: [{ dimensionIndex: col - 1, sortOrder: descending ? 'DESCENDING' : 'ASCENDING' }],
          },
        }],
      });
      return fire(EventType.ON_EDIT, function () {
        return editEvent(editor, tab, 2, 1, rows.length - 1, width, null);
      });
    }

    /** The value a person saw in the cell, as the event's oldValue carries it. */
    function displayed(v) {
      if (Object.prototype.toString.call(v) === '[object Date]') return formatDate(v, timeZone(), 'yyyy-MM-dd HH:mm:ss');
      if (v === true || v === false) return v ? 'TRUE' : 'FALSE';
      return v === '' ? '' : String(v);
    }

    /** Run the time-driven triggers once, as the hourly clock would, each as its creator. */
    function fireClock() {
      return fire(EventType.CLOCK, function () {
        return { authMode: 'FULL' };
      });
    }

    return {
      state: state,
      session: session,
      run: run,
      holdLock: holdLock,
      meanwhile: meanwhile,
      chargeTriggerRuntime: chargeTriggerRuntime,
      userTypes: userTypes,
      userPastes: userPastes,
      userSorts: userSorts,
      fireClock: fireClock,
      tabRows: tabRows,
      readBlock: readBlock,
    };
  }

  /** The top-level function names of an Apps Script file (what google.script.run can see). */
  function functionNames(source) {
    var names = [];
    var re = /^function\s+([A-Za-z_$][\w$]*)\s*\(/gm;
    var m;
    while ((m = re.exec(source)) !== null) names.push(m[1]);
    return names;
  }

  /** Evaluate Code.gs with the given globals in scope; return its top-level functions. */
  function load(source, globals) {
    var keys = Object.keys(globals);
    var names = functionNames(source);
    var body = source + '\nreturn {' + names.map(function (n) { return n + ': ' + n; }).join(', ') + '};';
    // eslint-disable-next-line no-new-func
    var factory = new Function(keys.join(','), body);
    return factory.apply(null, keys.map(function (k) { return globals[k]; }));
  }

  return {
    create: create,
    load: load,
    functionNames: functionNames,
    formatDate: formatDate,
    serialToDate: serialToDate,
    a1: a1,
    FETCH_DEADLINE_MS: FETCH_DEADLINE_MS,
  };
});
