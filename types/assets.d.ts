// Files imported `with { type: "file" }` resolve to a path (embedded by `bun build --compile`).
declare module "*.wasm" {
  const path: string;
  export default path;
}
declare module "*.elf" {
  const path: string;
  export default path;
}
