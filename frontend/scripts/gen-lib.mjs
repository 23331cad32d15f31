// The generator itself, shared by the npm scripts and the freshness test.
import { readFile } from "node:fs/promises";
import { compile } from "json-schema-to-typescript";

export const SCHEMA = new URL("../../schema/taskstream-events.schema.json", import.meta.url);
export const GENERATED = new URL("../packages/client/src/generated/events.ts", import.meta.url);

const BANNER = `/* eslint-disable */
/**
 * Generated from schema/taskstream-events.schema.json by frontend/scripts/gen-types.mjs.
 * Do not edit: change the schema and run \`npm run gen:types\` in frontend/.
 */`;

export async function generate() {
  const schema = JSON.parse(await readFile(SCHEMA, "utf8"));
  return compile(schema, "TaskstreamEvents", {
    bannerComment: BANNER,
    additionalProperties: false,
    unreachableDefinitions: true,
    strictIndexSignatures: true,
    format: true,
    style: { singleQuote: false, printWidth: 100 },
    $refOptions: { resolve: { external: false } },
  });
}
