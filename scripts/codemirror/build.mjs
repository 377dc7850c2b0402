// Builds CodeMirror 6 for the IDE, once, from the packages pinned in package-lock.json:
//   node build.mjs OUTDIR
// OUTDIR/codemirror.js: the core (core.mjs), defining the global `CM`.
// OUTDIR/lang-NAME.js: one language each, loaded when a language of that kind is chosen; it
// takes the shared packages from `CM` and sets `CM.lang.NAME`.
// Run by scripts/vendor.sh; the server only serves the results.
import { build } from 'esbuild';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const out = process.argv[2];
if (!out) throw new Error('usage: node build.mjs OUTDIR');

// Package -> the name of its namespace on `CM` (core.mjs).
const SHARED = {
  '@codemirror/state': 'state',
  '@codemirror/view': 'view',
  '@codemirror/commands': 'commands',
  '@codemirror/language': 'language',
  '@codemirror/autocomplete': 'autocomplete',
  '@lezer/highlight': 'highlight',
  '@lezer/common': 'common',
  '@lezer/lr': 'lr',
};
const fromCore = {
  name: 'from-core',
  setup(b) {
    b.onResolve({ filter: /^@(codemirror|lezer)\/[a-z-]+$/ }, (args) =>
      SHARED[args.path] ? { path: args.path, namespace: 'core' } : undefined);
    b.onLoad({ filter: /.*/, namespace: 'core' }, (args) =>
      ({ contents: `module.exports = globalThis.CM.${SHARED[args.path]};`, loader: 'js' }));
  },
};

// Every name a bundled package imports from a shared one must be kept by core.mjs (it keeps only
// what it names): check them all before building.
const core = readFileSync('core.mjs', 'utf8');
const kept = {};
for (const m of core.matchAll(/export const (\w+) = \{([^}]*)\}/g)) kept[m[1]] = new Set(m[2].split(',').map((x) => x.trim()).filter(Boolean));
const missing = [];
for (const scope of ['@codemirror', '@lezer']) {
  for (const name of readdirSync(join('node_modules', scope))) {
    const pkg = `${scope}/${name}`;
    const file = join('node_modules', pkg, 'dist/index.js');
    if (SHARED[pkg] || !existsSync(file)) continue;
    const src = readFileSync(file, 'utf8');
    if (/(import|export)\s*\*\s*(as\s+\w+\s*)?from\s*['"]@(codemirror|lezer)\//.test(src)) missing.push(`${pkg}: a * import of a shared package`);
    for (const m of src.matchAll(/(?:import|export)\s*\{([^}]*)\}\s*from\s*['"]([^'"]+)['"]/g)) {
      if (!SHARED[m[2]]) continue;
      for (const n of m[1].split(',').map((x) => x.trim().split(/\s+as\s+/)[0]).filter(Boolean)) {
        if (!kept[SHARED[m[2]]] || !kept[SHARED[m[2]]].has(n)) missing.push(`${pkg} imports ${n} from ${m[2]}`);
      }
    }
  }
}
if (missing.length) throw new Error('core.mjs must keep:\n' + missing.join('\n'));

const common = { bundle: true, minify: true, format: 'iife', target: 'es2020', legalComments: 'none', logLevel: 'warning' };
await build({ ...common, entryPoints: ['core.mjs'], globalName: 'CM', outfile: join(out, 'codemirror.js') });
for (const name of ['python', 'javascript', 'java', 'cpp']) {
  await build({
    ...common,
    stdin: {
      contents: `import { ${name} } from '@codemirror/lang-${name}';\n(globalThis.CM.lang ||= {}).${name} = ${name};\n`,
      resolveDir: process.cwd(),
    },
    plugins: [fromCore],
    outfile: join(out, `lang-${name}.js`),
  });
}
