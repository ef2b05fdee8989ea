// The world an Apps Script test runs in: a backend on loopback (the contract fake,
// tests/sidebar/fake_backend.py, or the real one, tests/sidebar/backend.py) with the Sheets
// emulator, and sidebar/Code.gs loaded per person over the shared Apps Script stand-in.
//
// Code.gs is configured exactly as in production: backend https://sheet-bridge.example.com
// (the urlFetchWhitelist prefix of appsscript.json), which the stand-in routes to the local
// backend. SHEET_BRIDGE_CODE_GS=/path/to/Code.gs runs the tests against another Code.gs (to
// check that a test fails on an older one).
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createSyncHttp } = require('./sync_http');

const REPO = path.resolve(__dirname, '..', '..', '..');
const AppsScriptLocal = require(path.join(REPO, 'sheet_bridge', 'local', 'static', 'apps_script_local.js'));
const CODE_GS_PATH = process.env.SHEET_BRIDGE_CODE_GS || path.join(REPO, 'sidebar', 'Code.gs');
const CODE_GS = fs.readFileSync(CODE_GS_PATH, 'utf8');
const MANIFEST = JSON.parse(fs.readFileSync(path.join(REPO, 'appsscript.json'), 'utf8'));
// The project's HTML files as clasp pushes them (.claspignore's "!" lines, rootDir "."), named
// as the Apps Script editor shows them: "sidebar/Sidebar".
const HTML_FILES = fs
  .readFileSync(path.join(REPO, '.claspignore'), 'utf8')
  .split('\n')
  .map((line) => /^!(.+)\.html$/.exec(line.trim()))
  .filter(Boolean)
  .map((m) => m[1]);
const BACKEND_URL = 'https://sheet-bridge.example.com';
const OPS = 'ops@example.com';
const SALES = 'sales@example.com';

/** The venv's python when there is one (make test puts it first on PATH anyway). */
function python() {
  if (process.env.SHEET_BRIDGE_PYTHON) return process.env.SHEET_BRIDGE_PYTHON;
  const venv = path.join(REPO, '.venv', 'bin', 'python');
  return fs.existsSync(venv) ? venv : 'python3';
}

/** Start a backend script; resolves with its JSON line ({backend_url, sheets_url, secret, ...}). */
function startScript(script, args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(python(), [path.join(__dirname, '..', script), ...args], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONPATH: REPO },
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(script + ' did not start in 30 s:\n' + err));
    }, 30000);
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl !== -1 && !child.info) {
        clearTimeout(timer);
        child.info = JSON.parse(out.slice(0, nl));
        resolve({
          ...child.info,
          stderr: () => err,
          stop: () => {
            child.stdin.end();
            return new Promise((done) => {
              if (child.exitCode !== null) return done();
              const kill = setTimeout(() => child.kill(), 10000);
              child.on('exit', () => {
                clearTimeout(kill);
                done();
              });
            });
          },
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (!child.info) reject(new Error(script + ' exited with ' + code + ':\n' + err));
    });
  });
}

/** The contract fake; `scale` plays its seconds (and UrlFetch's deadline) that much faster.
 * `tokens` ({email: ID token}) are the Google identities it accepts. */
async function startFake(scale = 1, tokens = {}) {
  const fake = await startScript('fake_backend.py', [String(scale)]);
  const identities = {};
  Object.keys(tokens).forEach((email) => {
    identities[tokens[email]] = email;
  });
  if (Object.keys(identities).length) postJson(fake.backend_url + '/_fake/identities', { identities });
  return fake;
}
/** The real backend (the emulator, the fake Meta and create_app); edits settle for
 * `settleSeconds` (default 0: sent at once). */
const startBackend = (settleSeconds) => startScript('backend.py', settleSeconds ? [String(settleSeconds)] : []);

const http = createSyncHttp();

/** A fresh spreadsheet world over `backend`: nobody has set anything up yet. */
function makeWorld(backend, options = {}) {
  const scale = backend.time_scale || 1;
  return AppsScriptLocal.create({
    http,
    sheetsUrl: backend.sheets_url,
    spreadsheetId: backend.spreadsheet_id,
    activeTab: backend.tab,
    source: CODE_GS,
    loader: (source, globals) => {
      const context = vm.createContext({ ...globals });
      vm.runInContext(source, context, { filename: 'sidebar/Code.gs' });
      return context;
    },
    manifest: options.manifest || MANIFEST,
    routes: options.routes || { [BACKEND_URL + '/']: backend.backend_url + '/' },
    users: options.users || {},
    fetchDeadlineMs: Math.round(AppsScriptLocal.FETCH_DEADLINE_MS * scale),
    timeScale: scale,
    htmlFiles: options.htmlFiles || HTML_FILES,
    projectName: 'Untitled project',
    hooks: options.hooks,
  });
}

function getJson(url) {
  const res = http({ method: 'GET', url });
  return JSON.parse(res.body);
}

function postJson(url, body) {
  const res = http({ method: 'POST', url, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) });
  return { status: res.status, body: JSON.parse(res.body) };
}

/** The backend's tab as the emulator holds it now: rows() (header first), col(header) (1-based),
 * cell(row, header) ('' when empty). `backend` is a function giving the started backend. */
function sheetView(backend) {
  function rows() {
    const b = backend();
    return getJson(b.sheets_url + '/_emulator/data').spreadsheets[b.spreadsheet_id].sheets[b.tab];
  }
  function col(header) {
    const c = rows()[0].indexOf(header);
    if (c === -1) throw new Error(header + ' is not a column');
    return c + 1;
  }
  function cell(row, header) {
    const v = rows()[row - 1][col(header) - 1];
    return v === undefined ? '' : v;
  }
  return { rows, col, cell };
}

/** A pass started from the sidebar as `user`, followed to its summary as the sidebar does. */
function wholePass(world, user) {
  let answer = world.run(user, 'syncNow', [{ wait: 5 }]);
  for (let i = 0; answer.state === 'running' && i < 100; i++) {
    const pass = world.run(user, 'getPass', [answer.pass_id]);
    answer = pass.state === 'running' ? pass : { ...pass.summary, state: pass.state };
  }
  if (answer.state !== 'done') throw new Error('the pass ended ' + answer.state + ': ' + JSON.stringify(answer));
  return answer;
}

module.exports = {
  AppsScriptLocal,
  BACKEND_URL,
  CODE_GS,
  HTML_FILES,
  MANIFEST,
  OPS,
  REPO,
  SALES,
  getJson,
  http,
  makeWorld,
  postJson,
  sheetView,
  startBackend,
  startFake,
  wholePass,
};
