/* The playground page: the emulated sheet as a grid, and the real sidebar/Code.gs running over
 * the Apps Script stand-in (apps_script_local.js). A grid edit is what a person typing does:
 * the value lands in the sheet, then the installed onEdit triggers run (Code.gs's handleEdit).
 * The sidebar iframe's google.script.run (script_run_shim.js) calls window.playground.run. */
(function () {
  'use strict';

  var cfg = null;
  var local = null;
  var code = null;
  var shown = []; // the values on screen, to mark the cells an action changed
  var activeRow = 0; // the row Code.gs last selected (jumpToRow), kept across re-renders

  function $(id) { return document.getElementById(id); }

  /** UrlFetchApp and SpreadsheetApp block in Apps Script; a synchronous XHR does here. */
  function syncHttp(req) {
    var xhr = new XMLHttpRequest();
    xhr.open(req.method || 'GET', req.url, false);
    Object.keys(req.headers || {}).forEach(function (k) { xhr.setRequestHeader(k, req.headers[k]); });
    try {
      xhr.send(req.body === undefined ? null : req.body);
    } catch (err) {
      throw new Error((err && err.message) || 'network error');
    }
    if (xhr.status === 0) throw new Error('network error');
    return { status: xhr.status, headers: {}, body: xhr.responseText };
  }

  function logExecution(text, failed) {
    var li = document.createElement('li');
    li.textContent = new Date().toLocaleTimeString() + '  ' + text;
    if (failed) li.className = 'fail';
    var list = $('executions');
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 60) list.removeChild(list.lastChild);
  }

  function toast(message, title) {
    var box = document.createElement('div');
    box.className = 'toast';
    var b = document.createElement('b');
    b.textContent = title || 'sheet-bridge';
    box.appendChild(b);
    box.appendChild(document.createTextNode(message));
    $('toasts').appendChild(box);
    setTimeout(function () { box.remove(); }, 10000);
  }

  /** Run one Code.gs entry point as an Apps Script execution: logged, a throw surfaced. */
  function execution(name, fn) {
    var started = Date.now();
    try {
      var result = fn();
      logExecution(name + ' completed · ' + (Date.now() - started) + ' ms');
      return result;
    } catch (err) {
      logExecution(name + ' failed: ' + err.message, true);
      throw err;
    }
  }

  function valuesUrl() {
    return cfg.sheets_url + '/v4/spreadsheets/' + encodeURIComponent(cfg.spreadsheet_id) + '/values/' +
      encodeURIComponent("'" + cfg.tab.replace(/'/g, "''") + "'");
  }

  function refreshGrid() {
    return fetch(valuesUrl())
      .then(function (r) { return r.json(); })
      .then(function (data) { render(data.values || []); });
  }

  function render(values) {
    var width = values.reduce(function (w, r) { return Math.max(w, r.length); }, 0);
    var header = values[0] || [];
    var table = $('grid');
    var first = shown.length === 0;
    table.textContent = '';
    var head = table.createTHead().insertRow();
    head.appendChild(document.createElement('th'));
    for (var c = 1; c <= width; c++) {
      var th = document.createElement('th');
      th.textContent = AppsScriptLocal.a1('x', 1, c, 1, 1).split('!')[1].replace(/\d+$/, '');
      if (header[c - 1]) {
        // Row 1's text repeated in the frozen top row, so it stays readable while scrolling.
        var small = document.createElement('small');
        small.textContent = String(header[c - 1]);
        th.appendChild(document.createElement('br'));
        th.appendChild(small);
      }
      head.appendChild(th);
    }
    var body = table.createTBody();
    for (var r = 1; r <= values.length + 1; r++) {
      var tr = body.insertRow();
      tr.dataset.row = String(r);
      if (r === 1) tr.className = 'header';
      if (r === activeRow) tr.classList.add('active');
      var num = tr.insertCell();
      num.className = 'rownum';
      num.textContent = String(r);
      for (var col = 1; col <= width; col++) {
        var td = tr.insertCell();
        var value = values[r - 1] && values[r - 1][col - 1] !== undefined ? String(values[r - 1][col - 1]) : '';
        var name = String(header[col - 1] || '');
        td.textContent = value;
        td.title = value;
        td.dataset.row = String(r);
        td.dataset.col = String(col);
        td.dataset.header = name;
        td.dataset.value = value;
        if (r > 1 && name === cfg.status_column) td.classList.add('status');
        if (r > 1 && name.indexOf('CAPI ') === 0) td.classList.add('capi');
        var before = shown[r - 1] && shown[r - 1][col - 1] !== undefined ? String(shown[r - 1][col - 1]) : '';
        if (!first && before !== value) td.classList.add('changed');
      }
    }
    shown = values;
  }

  function startEdit(td) {
    if (td.classList.contains('editing')) return;
    var input = document.createElement('input');
    input.value = td.dataset.value;
    input.setAttribute('aria-label', 'Row ' + td.dataset.row + ', ' + (td.dataset.header || 'column ' + td.dataset.col));
    if (td.classList.contains('status')) input.setAttribute('list', 'statuses');
    td.textContent = '';
    td.classList.add('editing');
    td.appendChild(input);
    input.focus();
    input.select();
    var done = false;
    function finish(save) {
      if (done) return;
      done = true;
      var value = input.value;
      td.classList.remove('editing');
      td.textContent = td.dataset.value;
      if (save && value !== td.dataset.value) commit(+td.dataset.row, +td.dataset.col, value);
    }
    input.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter') finish(true);
      if (ev.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', function () { finish(true); });
  }

  /** What Sheets does when a person types into a cell: store it, then run the onEdit triggers. */
  function commit(row, col, value) {
    var old;
    try {
      old = local.userTypes(cfg.tab, row, col, value);
    } catch (err) {
      toast(err.message, 'The sheet did not take the edit');
      refreshGrid();
      return;
    }
    try {
      execution('edit of row ' + row + ' → onEdit triggers', function () {
        return local.fireEdit(code, cfg.tab, row, col, old, value);
      });
    } catch (err) {
      // Code.gs already told the person in a toast; the execution log shows the failure.
    }
    refreshGrid();
  }

  function renderMenu(items) {
    var nav = $('menu');
    items.forEach(function (item) {
      var button = document.createElement('button');
      button.textContent = item.caption;
      button.dataset.fn = item.functionName;
      button.addEventListener('click', function () {
        try {
          execution(item.functionName, function () { return code[item.functionName](); });
        } catch (err) {
          toast(err.message, 'sheet-bridge: ' + item.caption + ' failed');
        }
        refreshGrid();
      });
      nav.appendChild(button);
    });
  }

  function activate(tab, row) {
    activeRow = row;
    var tr = document.querySelector('#grid tr[data-row="' + row + '"]');
    document.querySelectorAll('#grid tr.active').forEach(function (x) { x.classList.remove('active'); });
    if (tr) {
      tr.classList.add('active');
      tr.scrollIntoView({ block: 'center' });
    }
  }

  var ready = fetch('/playground/config')
    .then(function (r) { return r.json(); })
    .then(function (c) {
      cfg = c;
      $('sheet-title').textContent = cfg.tab + ' · ' + cfg.spreadsheet_id;
      return fetch('/playground/Code.gs').then(function (r) { return r.text(); });
    })
    .then(function (source) {
      local = AppsScriptLocal.create({
        http: syncHttp,
        sheetsUrl: cfg.sheets_url,
        spreadsheetId: cfg.spreadsheet_id,
        activeTab: cfg.tab,
        user: cfg.user,
        hooks: {
          toast: toast,
          menu: renderMenu,
          activate: activate,
          showSidebar: function () { $('sidebar').src = '/playground/sidebar'; },
          fetched: function (f) {
            var path = f.url.replace(location.origin, '');
            logExecution('  UrlFetchApp ' + f.method + ' ' + path + ' → ' + (f.error ? f.error : f.status) + ' · ' + f.ms + ' ms', !!f.error || f.status >= 400);
          },
        },
      });
      code = AppsScriptLocal.load(source, local.globals);
      execution('onOpen', function () { return code.onOpen({ authMode: 'FULL' }); });
      // What the person setting the add-on up does once: Settings → Save, then Install triggers.
      var saved = execution('saveSettings', function () {
        return code.saveSettings({ backendUrl: cfg.backend_url, authMode: 'secret', secret: cfg.secret });
      });
      if (saved.error) toast(saved.error, 'sheet-bridge settings');
      execution('installTriggers', function () { return code.installTriggers(); });
    });

  window.playground = {
    /** google.script.run's way in: run a public Code.gs function asynchronously. */
    run: function (name, args) {
      return ready.then(function () {
        return new Promise(function (resolve, reject) {
          setTimeout(function () {
            if (/_$/.test(name) || typeof code[name] !== 'function') {
              reject(new Error('Script function not found: ' + name));
              return;
            }
            try {
              resolve(execution(name, function () { return code[name].apply(null, args); }));
            } catch (err) {
              reject(err);
            }
            refreshGrid();
          }, 0);
        });
      });
    },
  };

  $('grid').addEventListener('click', function (ev) {
    var td = ev.target.closest('td');
    if (td && !td.classList.contains('rownum') && td.dataset.row) startEdit(td);
  });
  $('reload-grid').addEventListener('click', refreshGrid);
  $('fire-hourly').addEventListener('click', function () {
    try {
      execution('hourly trigger', function () { return local.fireClock(code); });
    } catch (err) {
      // hourlySync recorded and toasted it; the execution log shows the failure.
    }
    refreshGrid();
  });

  ready
    .then(refreshGrid)
    .then(function () {
      var statuses = document.createElement('datalist');
      statuses.id = 'statuses';
      (cfg.statuses || []).forEach(function (s) {
        var o = document.createElement('option');
        o.value = s;
        statuses.appendChild(o);
      });
      document.body.appendChild(statuses);
      $('sidebar').src = '/playground/sidebar';
    })
    .catch(function (err) {
      toast(err.message, 'The playground could not start');
      logExecution('start failed: ' + err.message, true);
    });
})();
