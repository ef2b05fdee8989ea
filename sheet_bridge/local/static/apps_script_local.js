/* A local stand-in for the Apps Script services sidebar/Code.gs uses, backed by the Sheets
 * emulator over real HTTP. One file serves the Node tests (tests/sidebar) and the playground
 * page, so both run the real Code.gs against the same stand-in.
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

  /** "yyyy-MM-dd'T'HH:mm:ssXXX" and the few other patterns Code.gs uses, in an IANA zone. */
  function formatDate(date, timeZone, pattern) {
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
    var offsetMin = Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
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
    var out = '';
    var re = /'([^']*)'|yyyy|MM|dd|HH|mm|ss|XXX|Z|[^'yMdHmsXZ]+/g;
    var m;
    while ((m = re.exec(pattern)) !== null) {
      if (m[1] !== undefined) out += m[1];
      else if (tokens[m[0]] !== undefined) out += tokens[m[0]];
      else if (/^[yMdHmsXZ]/.test(m[0])) throw new Error('formatDate: pattern not emulated: ' + pattern);
      else out += m[0];
    }
    return out;
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

  /**
   * Build the Apps Script globals for one spreadsheet in the emulator.
   *
   * options: http (required), sheetsUrl (emulator base, or '/sheets' behind the playground),
   * spreadsheetId, user (e-mail), identityToken, hooks: {toast(msg, title), showSidebar(html),
   * activate(tab, row, col), fetched({method, url, status, ms, error})}.
   */
  function create(options) {
    var http = options.http;
    var base = options.sheetsUrl.replace(/\/$/, '') + '/v4/spreadsheets/' + encodeURIComponent(options.spreadsheetId);
    var hooks = options.hooks || {};
    var state = {
      documentProperties: {},
      userProperties: {},
      scriptProperties: {},
      triggers: [],
      nextTriggerId: 1,
      lockHeld: false,
      toasts: [],
      fetches: [],
      numberFormats: {},
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

    function readBlock(tab, row, col, numRows, numCols) {
      var q = '?valueRenderOption=UNFORMATTED_VALUE';
      var got = sheetsCall('GET', '/values/' + encodeURIComponent(a1(tab, row, col, numRows, numCols)) + q);
      var values = got.values || [];
      var out = [];
      for (var r = 0; r < numRows; r++) {
        var line = [];
        for (var c = 0; c < numCols; c++) {
          var v = values[r] && values[r][c];
          line.push(v === undefined || v === null ? '' : v);
        }
        out.push(line);
      }
      return out; // Apps Script pads to the rectangle with ''
    }

    function writeBlock(tab, row, col, values, asText) {
      var option = asText ? 'RAW' : 'USER_ENTERED';
      var range = a1(tab, row, col, values.length, values[0].length);
      sheetsCall('PUT', '/values/' + encodeURIComponent(range) + '?valueInputOption=' + option, {
        values: values,
      });
    }

    function tabRows(tab) {
      var got = sheetsCall('GET', '/values/' + encodeURIComponent(quoteTab(tab)) + '?valueRenderOption=UNFORMATTED_VALUE');
      return got.values || [];
    }

    var ss; // the Spreadsheet, built below

    function Range(sheet, row, col, numRows, numCols) {
      var tab = sheet.getName();
      var key = function (r, c) {
        return tab + '!' + r + ':' + c;
      };
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
        getDisplayValue: function () {
          return String(this.getValue());
        },
        setValues: function (values) {
          if (values.length !== numRows || values.some(function (r) { return r.length !== numCols; })) {
            throw new Error('The number of rows or columns in the data does not match the range.');
          }
          writeBlock(tab, row, col, values, state.numberFormats[key(row, col)] === '@');
          return this;
        },
        setValue: function (value) {
          writeBlock(tab, row, col, [[value]], state.numberFormats[key(row, col)] === '@');
          return this;
        },
        setNumberFormat: function (format) {
          for (var r = row; r < row + numRows; r++) {
            for (var c = col; c < col + numCols; c++) state.numberFormats[key(r, c)] = format;
          }
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

    function book() {
      var fields = 'properties(title,timeZone),sheets.properties(title)';
      return sheetsCall('GET', '?fields=' + encodeURIComponent(fields));
    }

    ss = {
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

    var menus = [];
    var ui = {
      createAddonMenu: function () {
        var menu = { items: [] };
        return {
          addItem: function (caption, fn) {
            menu.items.push({ caption: caption, functionName: fn });
            return this;
          },
          addSeparator: function () {
            return this;
          },
          addToUi: function () {
            menus.push(menu);
            if (hooks.menu) hooks.menu(menu.items);
          },
        };
      },
      showSidebar: function (html) {
        if (hooks.showSidebar) hooks.showSidebar(html);
      },
      alert: function (msg) {
        ss.toast(msg, 'alert');
      },
    };

    var EventType = { ON_EDIT: 'ON_EDIT', CLOCK: 'CLOCK', ON_OPEN: 'ON_OPEN' };

    function TriggerBuilder(handler) {
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
          var t = {
            id: id,
            spec: spec,
            getUniqueId: function () { return id; },
            getHandlerFunction: function () { return spec.handler; },
            getEventType: function () { return spec.type; },
            getTriggerSource: function () { return spec.source; },
          };
          state.triggers.push(t);
          return t;
        },
      };
      return builder;
    }

    function lock() {
      var mine = false;
      return {
        tryLock: function () {
          // One JS thread: a held lock is held by an outer call of this same execution, which
          // Apps Script would make this call wait out; here it cannot, so say no.
          if (state.lockHeld) return false;
          state.lockHeld = mine = true;
          return true;
        },
        waitLock: function (ms) {
          if (!this.tryLock(ms)) throw new Error('Lock timeout: another process was holding the lock for too long.');
        },
        hasLock: function () {
          return mine;
        },
        releaseLock: function () {
          if (mine) state.lockHeld = mine = false;
        },
      };
    }

    function HTTPResponse(res) {
      return {
        getResponseCode: function () { return res.status; },
        getContentText: function () { return res.body || ''; },
        getHeaders: function () { return res.headers || {}; },
      };
    }

    var globals = {
      SpreadsheetApp: {
        getActive: function () { return ss; },
        getActiveSpreadsheet: function () { return ss; },
        getUi: function () { return ui; },
        flush: function () {},
      },
      PropertiesService: {
        getDocumentProperties: function () { return Properties(state.documentProperties); },
        getUserProperties: function () { return Properties(state.userProperties); },
        getScriptProperties: function () { return Properties(state.scriptProperties); },
      },
      LockService: {
        getDocumentLock: lock,
        getScriptLock: lock,
        getUserLock: lock,
      },
      ScriptApp: {
        EventType: EventType,
        AuthMode: { FULL: 'FULL', LIMITED: 'LIMITED', NONE: 'NONE' },
        newTrigger: TriggerBuilder,
        getProjectTriggers: function () { return state.triggers.slice(); },
        getUserTriggers: function () { return state.triggers.slice(); },
        deleteTrigger: function (t) {
          state.triggers = state.triggers.filter(function (x) { return x.id !== t.getUniqueId(); });
        },
        getIdentityToken: function () { return options.identityToken || ''; },
        getOAuthToken: function () { return 'local-oauth-token'; },
      },
      Utilities: {
        formatDate: formatDate,
        sleep: function () {},
      },
      HtmlService: {
        createHtmlOutputFromFile: function (name) {
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
        getActiveUser: function () { return { getEmail: function () { return options.user || ''; } }; },
        getEffectiveUser: function () { return { getEmail: function () { return options.user || ''; } }; },
        getScriptTimeZone: function () { return 'Etc/UTC'; },
      },
      UrlFetchApp: {
        fetch: function (url, params) {
          params = params || {};
          var headers = Object.assign({}, params.headers || {});
          if (params.contentType) headers['Content-Type'] = params.contentType;
          var method = (params.method || 'get').toUpperCase();
          var started = Date.now();
          var res;
          try {
            res = http({ method: method, url: url, headers: headers, body: params.payload });
          } catch (err) {
            state.fetches.push({ method: method, url: url, error: err.message, params: params });
            if (hooks.fetched) hooks.fetched({ method: method, url: url, error: err.message, ms: Date.now() - started });
            // The wording Apps Script uses when the host cannot be reached.
            throw new Error('Address unavailable: ' + url);
          }
          var entry = { method: method, url: url, status: res.status, params: params, body: res.body };
          state.fetches.push(entry);
          if (hooks.fetched) hooks.fetched({ method: method, url: url, status: res.status, ms: Date.now() - started });
          if (res.status >= 400 && !params.muteHttpExceptions) {
            throw new Error('Request failed for ' + url + ' returned code ' + res.status + '. Truncated server response: ' + String(res.body).slice(0, 100));
          }
          return HTTPResponse(res);
        },
      },
      Logger: { log: function () { console.log.apply(console, arguments); } },
      console: console,
    };

    /** What a person typing into a cell does: the value lands as typed (USER_ENTERED). */
    function userTypes(tab, row, col, value) {
      var old = readBlock(tab, row, col, 1, 1)[0][0];
      writeBlock(tab, row, col, [[value]], false);
      return old;
    }

    /** The event object an installable onEdit trigger receives for a one-cell edit. */
    function editEvent(tab, row, col, oldValue, value, triggerUid) {
      var e = {
        authMode: 'FULL',
        range: Sheet(tab).getRange(row, col),
        source: ss,
        user: { getEmail: function () { return options.user || ''; } },
        triggerUid: triggerUid,
      };
      if (value !== '' && value !== undefined) e.value = value;
      if (oldValue !== '' && oldValue !== undefined) e.oldValue = oldValue;
      return e;
    }

    /** Run the installed onEdit triggers for an edit, as Sheets does after a person types. */
    function handler(code, t) {
      var fn = code[t.getHandlerFunction()];
      if (typeof fn !== 'function') throw new Error('Script function not found: ' + t.getHandlerFunction());
      return fn;
    }

    function fireEdit(code, tab, row, col, oldValue, value) {
      var ran = [];
      state.triggers
        .filter(function (t) { return t.getEventType() === EventType.ON_EDIT; })
        .forEach(function (t) {
          handler(code, t)(editEvent(tab, row, col, oldValue, value, t.getUniqueId()));
          ran.push(t.getHandlerFunction());
        });
      return ran;
    }

    /** Run the time-driven triggers once, as the hourly clock would. */
    function fireClock(code) {
      var ran = [];
      state.triggers
        .filter(function (t) { return t.getEventType() === EventType.CLOCK; })
        .forEach(function (t) {
          handler(code, t)({ authMode: 'FULL', triggerUid: t.getUniqueId() });
          ran.push(t.getHandlerFunction());
        });
      return ran;
    }

    return {
      globals: globals,
      state: state,
      menus: menus,
      userTypes: userTypes,
      editEvent: editEvent,
      fireEdit: fireEdit,
      fireClock: fireClock,
      tabRows: tabRows,
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

  return { create: create, load: load, functionNames: functionNames, formatDate: formatDate, a1: a1 };
});
