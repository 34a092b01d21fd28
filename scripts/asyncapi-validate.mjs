// Validate AsyncAPI documents with the official parser (@asyncapi/parser, pinned in package.json),
// OpenAPI 3.0 payload schemas included (@asyncapi/openapi-schema-parser). Relative $refs resolve
// from each document's own location. Prints the diagnostics; exits 1 on any error.
//
// Usage: node scripts/asyncapi-validate.mjs FILE...
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Parser, fromFile } from "@asyncapi/parser";
import { OpenAPISchemaParser } from "@asyncapi/openapi-schema-parser";

const parser = new Parser();
parser.registerSchemaParser(OpenAPISchemaParser());
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await fromFile(parser, resolve(file)).parse();
  const errors = diagnostics.filter((d) => d.severity === 0);
  for (const d of diagnostics) {
    const where = (d.path || []).join(".");
    console.log(`${file}: ${["error", "warning", "info", "hint"][d.severity]} ${d.code} ${where}: ${d.message}`);
  }
  if (!document || errors.length) {
    failed = true;
    console.log(`${file}: INVALID (${errors.length} error(s))`);
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()} (${document.allMessages().length} messages)`);
  }
}
process.exit(failed ? 1 : 0);
