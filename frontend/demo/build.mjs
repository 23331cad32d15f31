// Bundles the demo page for Django to serve: realtime/static/taskstream/dist/demo.js
// (gitignored; `make run` and `make test` build it). It imports the packages as users do,
// through their built dist/, so `npm run build:lib` runs first.
import { build } from "esbuild";

const outfile = new URL("../../realtime/static/taskstream/dist/demo.js", import.meta.url).pathname;
await build({
  entryPoints: [new URL("./src/main.tsx", import.meta.url).pathname],
  bundle: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  minify: true,
  sourcemap: true,
  define: { "process.env.NODE_ENV": '"production"' },
  outfile,
  logLevel: "info",
});
