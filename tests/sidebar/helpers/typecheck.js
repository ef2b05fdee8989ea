// Type-check Apps Script files (.gs is JavaScript) with TypeScript against Apps Script's
// published typings, @types/google-apps-script, as `tsc --noEmit --checkJs --allowJs` does.
// tsc reads JavaScript only from .js files, so each .gs file is checked as a .js copy in a
// temporary folder; the diagnostics name the .gs file. Versions are pinned in package.json
// and package-lock.json (installed by `make node-test`).
//
//   node tests/sidebar/helpers/typecheck.js sidebar/Code.gs   → prints errors, exits 1 if any
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const TYPES = path.join(ROOT, 'node_modules', '@types');

// Apps Script's V8 runtime: modern JavaScript and no DOM (a `document` or `window` is an error).
const COMPILER_OPTIONS = {
  noEmit: true,
  allowJs: true,
  checkJs: true,
  target: 'es2020',
  lib: ['es2020'],
  types: ['google-apps-script'],
  typeRoots: [TYPES],
};

/** tsc's diagnostics for `files` (paths to .gs files): [{file, line, col, code, message}]. */
function typecheck(files) {
  if (!fs.existsSync(TSC) || !fs.existsSync(path.join(TYPES, 'google-apps-script'))) {
    throw new Error('TypeScript and @types/google-apps-script are not installed: run `make node-test` (npm ci)');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gs-typecheck-'));
  try {
    const names = {};
    const copies = files.map((file, i) => {
      const copy = path.join(dir, i + '-' + path.basename(file).replace(/\.gs$/, '') + '.js');
      fs.copyFileSync(file, copy);
      names[path.basename(copy)] = path.relative(ROOT, path.resolve(file));
      return copy;
    });
    fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: COMPILER_OPTIONS, files: copies }));
    let out = '';
    try {
      execFileSync(process.execPath, [TSC, '-p', dir, '--pretty', 'false'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      out = String(err.stdout || '') + String(err.stderr || '');
      if (!/error TS\d+/.test(out)) throw err;
    }
    return out
      .split('\n')
      .map((line) => /^(.*?)\((\d+),(\d+)\): error (TS\d+): (.*)$/.exec(line))
      .filter(Boolean)
      .map((m) => ({ file: names[path.basename(m[1])] || m[1], line: +m[2], col: +m[3], code: m[4], message: m[5] }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function describe(d) {
  return d.file + ':' + d.line + ':' + d.col + ' ' + d.code + ' ' + d.message;
}

module.exports = { typecheck, describe, COMPILER_OPTIONS };

if (require.main === module) {
  const found = typecheck(process.argv.slice(2));
  found.forEach((d) => console.log(describe(d)));
  console.log(found.length + ' error(s)');
  process.exit(found.length ? 1 : 0);
}
