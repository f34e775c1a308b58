// The architecture test (npm run lint:arch, part of npm run lint and so of npm test): the rooms of ARCHITECTURE.md and what each may import.
// Imports only point down. Type-only imports count too: a type shared by two processes belongs in protocol/.
const R = 'runtime/';
/** A room's files, as a path pattern. */
const room = (name) => `^${R}${name}/`;
/** Rooms a room may import from (besides itself, node: built-ins and npm packages). */
const allowed = {
  base: [],
  bus: ['base'],
  scheduling: ['base'],
  protocol: ['base', 'scheduling'],
  tensor: ['base'],
  state: ['base', 'bus', 'protocol', 'scheduling'],
  shipping: ['base', 'bus', 'protocol', 'state', 'scheduling'],
  core: ['base', 'bus', 'protocol', 'state', 'scheduling', 'tensor', 'object-store'],
  head: ['base', 'bus', 'protocol', 'state', 'scheduling', 'shipping'],
  node: ['base', 'bus', 'protocol', 'state', 'scheduling', 'object-store', 'shipping'],
  worker: ['base', 'bus', 'protocol', 'state', 'scheduling', 'tensor', 'object-store', 'core', 'shipping'],
  api: ['base', 'bus', 'protocol', 'state', 'scheduling', 'object-store', 'core', 'cluster', 'shipping'],
  cluster: ['base', 'bus', 'protocol', 'scheduling', 'head', 'node'],
  cli: ['base', 'bus', 'protocol', 'state', 'scheduling', 'object-store', 'cluster', 'shipping'],
};
const path = (r) => (r === 'object-store' ? '^object-store/' : room(r));

module.exports = {
  forbidden: [
    {
      name: 'no-cycle',
      comment: 'No import cycle between files: a cycle hides which module is the lower layer.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...Object.entries(allowed).map(([name, may]) => ({
      name: `runtime-${name}`,
      comment: `runtime/${name}/ may import only ${may.length ? may.join(', ') : 'nothing of troupe outside it'}`,
      severity: 'error',
      from: { path: room(name) },
      to: {
        path: '^(runtime|object-store|actors|examples|test|bench|scripts)/',
        pathNot: [room(name), ...may.map(path)],
      },
    })),
    {
      name: 'runtime-top',
      comment: 'Only the package entry sits directly in runtime/.',
      severity: 'error',
      from: { path: `^${R}[^/]+$`, pathNot: `^${R}index\\.ts$` },
      to: {},
    },
    {
      name: 'object-store',
      comment: "object-store/ imports only the runtime's base, bus and protocol.",
      severity: 'error',
      from: { path: '^object-store/' },
      to: { path: '^(runtime|actors|examples|test|bench|scripts)/', pathNot: ['^runtime/(base|bus|protocol)/'] },
    },
    {
      name: 'only-the-entry-imports-actors',
      comment: 'Of the runtime, only the package entry (runtime/index.ts) imports actors/.',
      severity: 'error',
      from: { path: '^(runtime|object-store)/', pathNot: `^${R}index\\.ts$` },
      to: { path: '^actors/' },
    },
    {
      name: 'actor-api',
      comment: 'The actor API (the root of actors/) uses the runtime below the package entry, never the processes.',
      severity: 'error',
      from: { path: '^actors/[^/]+$' },
      to: {
        path: '^(runtime|object-store|examples|test|bench|scripts)/|^actors/.+/',
        pathNot: ['^runtime/(base|bus|protocol|scheduling|core|api)/', '^object-store/object-ref\\.ts$'],
      },
    },
    {
      name: 'libraries-through-one-door',
      comment:
        'The libraries (supervision, collective, train, serve, tune) reach the runtime only through ' +
        'actors/library/runtime.ts, and the rest of actors/ through the actor API at its root.',
      severity: 'error',
      from: {
        path: '^actors/(supervision|collective|train|serve|tune|library)/',
        pathNot: '^actors/library/runtime\\.ts$',
      },
      to: { path: '^(runtime|object-store|examples|test|bench|scripts)/' },
    },
    {
      name: 'examples-use-the-package',
      comment: "Examples import only troupe's package entry, as users do.",
      severity: 'error',
      from: { path: '^examples/' },
      to: { path: '^(runtime|object-store|actors)/', pathNot: `^${R}index\\.ts$` },
    },
    {
      name: 'no-unresolvable',
      comment: 'Every relative import resolves to a file.',
      severity: 'error',
      // The hosts app's packages are installed into its copy by the test (test/cluster/hosts.test.ts), not here.
      from: { pathNot: '^test/fixtures/hosts-app/' },
      to: { couldNotResolve: true, pathNot: '^troupe$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^node_modules/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      extensions: ['.ts', '.mjs', '.js'],
      exportsFields: ['exports'],
      conditionNames: ['troupe-source', 'import', 'require', 'node', 'default'],
    },
  },
};
