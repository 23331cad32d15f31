// Generates packages/client/src/generated/events.ts from ../schema/taskstream-events.schema.json,
// the one definition of the event types shared with the Python side. `--check` regenerates in
// memory and fails when the committed file differs, so a schema change without regeneration
// is caught by the tests (test/generated.test.ts runs the same comparison).
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { generate, GENERATED, SCHEMA } from "./gen-lib.mjs";

const check = process.argv.includes("--check");
const text = await generate();
if (check) {
  const current = await readFile(GENERATED, "utf8").catch(() => "");
  if (current !== text) {
    console.error(
      `${fileURLToPath(GENERATED)} is stale against ${fileURLToPath(SCHEMA)}: run \`npm run gen:types\` in frontend/`,
    );
    process.exit(1);
  }
  console.log("generated event types are up to date");
} else {
  await writeFile(GENERATED, text);
  console.log(`wrote ${fileURLToPath(GENERATED)}`);
}
