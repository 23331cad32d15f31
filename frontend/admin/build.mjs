// Bundles the admin's live views for Django to serve: realtime/static/taskstream/dist/admin-live.js
// (gitignored; `make frontend` builds it with the demo). A classic script (IIFE), so the admin's
// templates include it with a plain <script defer>. It imports @taskstream/client through its
// built dist/, so `npm run build:lib` runs first.
import { build } from "esbuild";

const outfile = new URL("../../realtime/static/taskstream/dist/admin-live.js", import.meta.url).pathname;
await build({
  entryPoints: [new URL("./src/live.ts", import.meta.url).pathname],
  bundle: true,
  format: "iife",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  outfile,
  logLevel: "info",
});
