// The world an Apps Script test runs in: the Python backend (tests/sidebar/backend.py: the
// emulator, the fake Meta and the real Flask app on loopback) and Code.gs loaded into a vm
// context over the shared Apps Script stand-in.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createSyncHttp } = require('./sync_http');

const REPO = path.resolve(__dirname, '..', '..', '..');
const AppsScriptLocal = require(path.join(REPO, 'sheet_bridge', 'local', 'static', 'apps_script_local.js'));
const CODE_GS = fs.readFileSync(path.join(REPO, 'sidebar', 'Code.gs'), 'utf8');

/** The venv's python when there is one (make test puts it first on PATH anyway). */
function python() {
  if (process.env.SHEET_BRIDGE_PYTHON) return process.env.SHEET_BRIDGE_PYTHON;
  const venv = path.join(REPO, '.venv', 'bin', 'python');
  return fs.existsSync(venv) ? venv : 'python3';
}

/** Start the backend; resolves with its JSON line ({backend_url, sheets_url, meta_url, secret, ...}). */
function startBackend() {
  return new Promise((resolve, reject) => {
    const child = spawn(python(), [path.join(__dirname, '..', 'backend.py')], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONPATH: REPO },
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('backend did not start in 30 s:\n' + err));
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
      if (!child.info) reject(new Error('backend exited with ' + code + ':\n' + err));
    });
  });
}

const http = createSyncHttp();

/** Code.gs in a fresh vm context (fresh properties, triggers, lock), over the backend's sheet. */
function loadCodeGs(backend, options = {}) {
  const local = AppsScriptLocal.create({
    http,
    sheetsUrl: backend.sheets_url,
    spreadsheetId: backend.spreadsheet_id,
    user: 'sales@example.com',
    identityToken: options.identityToken || 'not-a-google-token',
  });
  const context = vm.createContext({ ...local.globals });
  vm.runInContext(CODE_GS, context, { filename: 'sidebar/Code.gs' });
  return { code: context, local };
}

function getJson(url) {
  const res = http({ method: 'GET', url });
  return JSON.parse(res.body);
}

function postJson(url, body) {
  const res = http({ method: 'POST', url, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(res.body) };
}

module.exports = { AppsScriptLocal, CODE_GS, REPO, startBackend, loadCodeGs, getJson, postJson, http };
