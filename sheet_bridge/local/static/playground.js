/* The playground page: the emulated sheet as a grid, and the real sidebar/Code.gs running over
 * the Apps Script stand-in (apps_script_local.js), as one of two editors of the spreadsheet.
 * A grid edit is what a person does in Sheets: typing into a cell (an edit event with the new
 * and old value), pasting a block (one event over the block, no values) or sorting the rows
 * (one event over the sorted range); the installed onEdit triggers then run, each as the
 * person who installed it. The sidebar iframe's google.script.run (script_run_shim.js) calls
 * window.playground.run, as the editor the page is switched to. */
(function () {
  'use strict';

  var cfg = null;
  var world = null;
  var user = null; // the editor at the keyboard
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
    while (list.children.length > 80) list.removeChild(list.lastChild);
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

  /** Run something as an Apps Script execution: logged, a throw surfaced. */
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

  /** One Code.gs function as `who` (a menu click or a google.script.run call). */
  function runAs(who, name, args) {
    return execution(name + ' (as ' + who + ')', function () { return world.run(who, name, args); });
  }

  /** What Sheets does after a person's action: the installed triggers run; their failures
   * were already told in a toast by Code.gs and show in the execution log. */
  function triggers(what, fn) {
    try {
      execution(what + ' → onEdit triggers', fn);
    } catch (err) {
      // shown in the log
    }
    refreshGrid();
    if (cfg.settle_seconds) refreshSidebar();
  }

  /** Click the sidebar's ↻, as a person would after an edit that settles, so it lists what
   * the edit left pending (then it looks again by itself until that is sent; each of its calls
   * refreshes the grid too). A sidebar busy with a pass is left alone: its end refreshes it. */
  function refreshSidebar() {
    var frame = $('sidebar');
    var button = frame.contentDocument && frame.contentDocument.getElementById('refresh');
    if (button && !button.disabled) button.click();
  }

  /** What happens to an edit in this playground: its bridge.toml's [sync] settle_seconds. */
  function explainEdits(settle) {
    var text;
    if (settle === null || settle === undefined) return;
    if (settle === 0) {
      text = 'This demo sends an edit at once ([sync] settle_seconds = 0 in its bridge.toml): ' +
        'change a Lead Status cell and its CAPI columns fill in. A real bridge waits ' +
        '(120 s by default) so a status changed back by mistake sends nothing.';
    } else {
      text = 'An edit settles for ' + settle + ' s first ([sync] settle_seconds in ' +
        'bridge.toml): meanwhile its row says "Pending" and the sidebar lists it with the time ' +
        'it goes; a change back before then sends nothing. Then the backend sends it, and the ' +
        'sidebar and this grid refresh by themselves (Sync now does not cut the wait short).';
    }
    $('edit-flow').textContent = text;
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
      th.dataset.col = String(c);
      th.textContent = AppsScriptLocal.a1('x', 1, c, 1, 1).split('!')[1].replace(/\d+$/, '');
      var sort = document.createElement('button');
      sort.className = 'sort';
      sort.title = 'Sort the rows A→Z by this column (Data → Sort range)';
      sort.textContent = '↓';
      sort.dataset.col = String(c);
      th.appendChild(sort);
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

  /** Tab-separated text, as a copy from a spreadsheet puts on the clipboard, as rows. */
  function parseBlock(text) {
    var lines = text.replace(/\r\n?/g, '\n').replace(/\n$/, '').split('\n');
    var rows = lines.map(function (l) { return l.split('\t'); });
    var width = rows.reduce(function (w, r) { return Math.max(w, r.length); }, 0);
    return rows.map(function (r) { while (r.length < width) r.push(''); return r; });
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
    // A block from the clipboard lands from this cell down and right, as in Sheets.
    input.addEventListener('paste', function (ev) {
      var text = ev.clipboardData ? ev.clipboardData.getData('text/plain') : '';
      if (!/[\t\n]/.test(text.replace(/\n$/, ''))) return; // one value: typed into the cell
      ev.preventDefault();
      done = true;
      td.classList.remove('editing');
      td.textContent = td.dataset.value;
      paste(+td.dataset.row, +td.dataset.col, parseBlock(text));
    });
  }

  /** A person typing into a cell: store it, then run the onEdit triggers. */
  function commit(row, col, value) {
    triggers('edit of row ' + row + ' by ' + user, function () {
      return world.userTypes(user, cfg.tab, row, col, value);
    });
  }

  function paste(row, col, block) {
    triggers('paste of ' + block.length + ' row(s) at row ' + row + ' by ' + user, function () {
      return world.userPastes(user, cfg.tab, row, col, block);
    });
  }

  function sortBy(col) {
    triggers('sort by column ' + col + ' by ' + user, function () {
      return world.userSorts(user, cfg.tab, col, false);
    });
  }

  function renderMenu(title, items) {
    var nav = $('menu');
    nav.textContent = '';
    var label = document.createElement('span');
    label.className = 'muted';
    label.id = 'menu-title';
    label.textContent = title + ':';
    nav.appendChild(label);
    items.forEach(function (item) {
      var button = document.createElement('button');
      button.textContent = item.caption;
      button.dataset.fn = item.functionName;
      button.addEventListener('click', function () {
        try {
          runAs(user, item.functionName, []);
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

  /** What a person does once before using the add-on: with a shared secret, enter it (it is
   * kept in their own User Properties). The first editor also saves the URL and installs. */
  function setUp(who, first) {
    var settings = { backendUrl: cfg.backend_url, authMode: cfg.auth_mode };
    if (cfg.auth_mode === 'secret') settings.secret = cfg.secret;
    if (first || cfg.auth_mode === 'secret') {
      var saved = runAs(who, 'saveSettings', [settings]);
      if (saved.error) toast(saved.error, 'sheet-bridge settings');
    }
    if (first) runAs(who, 'installTriggers', []);
  }

  function switchUser(who) {
    user = who;
    $('user').value = who;
    if (!setUp.done[who]) {
      setUp.done[who] = true;
      try {
        setUp(who, false);
      } catch (err) {
        toast(err.message, 'sheet-bridge settings');
      }
    }
    $('sidebar').src = '/playground/sidebar?as=' + encodeURIComponent(who);
  }
  setUp.done = {};

  var ready = fetch('/playground/config')
    .then(function (r) { return r.json(); })
    .then(function (c) {
      cfg = c;
      $('sheet-title').textContent = cfg.tab + ' · ' + cfg.spreadsheet_id;
      Object.keys(cfg.users).forEach(function (email) {
        var o = document.createElement('option');
        o.value = email;
        o.textContent = email;
        $('user').appendChild(o);
      });
      return fetch('/playground/Code.gs').then(function (r) { return r.text(); });
    })
    .then(function (source) {
      var routes = {};
      Object.keys(cfg.routes).forEach(function (prefix) {
        routes[prefix] = cfg.routes[prefix];
      });
      world = AppsScriptLocal.create({
        http: syncHttp,
        sheetsUrl: cfg.sheets_url,
        spreadsheetId: cfg.spreadsheet_id,
        activeTab: cfg.tab,
        source: source,
        manifest: cfg.manifest,
        routes: routes,
        users: cfg.users,
        fetchDeadlineMs: cfg.fetch_deadline_ms || undefined,
        htmlFiles: cfg.html_files,
        hooks: {
          toast: toast,
          menu: renderMenu,
          activate: activate,
          showSidebar: function () { $('sidebar').src = '/playground/sidebar?as=' + encodeURIComponent(user); },
          fetched: function (f) {
            logExecution('  UrlFetchApp ' + f.method + ' ' + f.url + ' (as ' + f.user + ') → ' + (f.error ? f.error : f.status) + ' · ' + f.ms + ' ms', !!f.error || f.status >= 400);
          },
        },
      });
      user = cfg.user;
      explainEdits(cfg.settle_seconds);
      runAs(user, 'onOpen', [{ authMode: 'LIMITED' }]);
      setUp.done[user] = true;
      setUp(user, true);
    });

  window.playground = {
    /** google.script.run's way in: run a public Code.gs function asynchronously, as the
     * editor at the keyboard. */
    run: function (name, args) {
      return ready.then(function () {
        return new Promise(function (resolve, reject) {
          setTimeout(function () {
            if (/_$/.test(name) || !world.session(user).code || typeof world.session(user).code[name] !== 'function') {
              reject(new Error('Script function not found: ' + name));
              return;
            }
            try {
              resolve(runAs(user, name, args));
            } catch (err) {
              reject(err);
            }
            refreshGrid();
          }, 0);
        });
      });
    },
    /** For tests and the curious: the stand-in's state (fetches, triggers, properties). */
    state: function () { return world.state; },
  };

  $('grid').addEventListener('click', function (ev) {
    var sort = ev.target.closest('button.sort');
    if (sort) {
      sortBy(+sort.dataset.col);
      return;
    }
    var td = ev.target.closest('td');
    if (td && !td.classList.contains('rownum') && td.dataset.row) startEdit(td);
  });
  $('reload-grid').addEventListener('click', refreshGrid);
  $('user').addEventListener('change', function () { switchUser($('user').value); });
  $('fire-hourly').addEventListener('click', function () {
    try {
      execution('hourly triggers', function () { return world.fireClock(); });
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
      switchUser(user);
    })
    .catch(function (err) {
      toast(err.message, 'The playground could not start');
      logExecution('start failed: ' + err.message, true);
    });
})();
