// Checks the REST calls of a forge test against GitHub's own OpenAPI description (npm
// @octokit/openapi, pinned in package.json): each request body the product sent against the
// operation's request schema, and each answer the forge stand-in gave against the schema of that
// status. Usage: node tests/forge/openapi.mjs calls.json, where calls.json is a list of
// {method, template, status, body, response}; prints one line per problem, exits 1 if any.
import Ajv from 'ajv';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const described = require.resolve('@octokit/openapi/generated/api.github.com.json');
const doc = JSON.parse(readFileSync(described, 'utf8'));
// OpenAPI 3.0 schemas are JSON Schema with extras (nullable, example, discriminator): ajv takes
// `nullable` itself and is told to ignore the rest and the formats.
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema({ $id: 'gh', components: doc.components });
const rebased = (schema) => JSON.parse(JSON.stringify(schema).replace(/"#\/components\//g, '"gh#/components/'));
const compiled = new Map();
function validator(key, schema) {
  if (!compiled.has(key)) compiled.set(key, ajv.compile(rebased(schema)));
  return compiled.get(key);
}

const calls = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const problems = [];
for (const c of calls) {
  const what = `${c.method} ${c.template} (${c.status})`;
  const op = doc.paths[c.template]?.[c.method.toLowerCase()];
  if (!op) { problems.push(`${what}: no such operation in GitHub's API`); continue; }
  const requestSchema = op.requestBody?.content?.['application/json']?.schema;
  if (requestSchema) {
    const v = validator(`${what} request`, requestSchema);
    if (!v(c.body)) problems.push(`${what}: the request: ${ajv.errorsText(v.errors)}`);
  }
  const answer = op.responses?.[String(c.status)];
  if (!answer) { problems.push(`${what}: GitHub does not answer this status`); continue; }
  const responseSchema = answer.content?.['application/json']?.schema;
  if (responseSchema) {
    const v = validator(`${what} response`, responseSchema);
    if (!v(c.response)) problems.push(`${what}: the answer: ${ajv.errorsText(v.errors)}`);
  }
}
for (const p of problems) console.log(p);
console.log(`checked ${calls.length} calls, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
