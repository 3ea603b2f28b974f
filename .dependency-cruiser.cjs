/**
 * The import rules of ../shared/DESIGN.md's layers, checked by `bun run deps` (dependency-cruiser)
 * in CI. test/unit/import-rules.test.ts shows each rule firing on a fixture.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "An import cycle ties modules into one: split out the shared part (types into a leaf module).",
      from: {},
      to: { circular: true },
    },
    {
      name: "sys-imports-nothing-of-ours",
      severity: "error",
      comment: "src/sys is the thin bun:ffi layer over libc: it holds no policy and imports nothing of snowflock but its typed errors.",
      from: { path: "^src/sys/" },
      to: { path: "^(src/(?!sys/|errors\\.ts$)|bench/|demo/|test/|bin/)" },
    },
    {
      name: "no-test-code-in-the-binary",
      severity: "error",
      comment: "What the executable is built from (bin/, src/) must not import test code.",
      from: { path: "^(src|bin)/" },
      to: { path: "^test/" },
    },
    {
      name: "no-backend-internals-above-the-backend",
      severity: "error",
      comment: "Nothing above src/backend imports a backend's internals: the layers above use the seam (src/backend/backend.ts) and get a backend from src/backend/select.ts.",
      from: { path: "^(src/(?!backend/)|bin/|demo/|bench/)" },
      to: { path: "^src/backend/(kvm|xen)/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)node_modules/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};
