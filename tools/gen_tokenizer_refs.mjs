// Regenerates tests/data/tokenizer/expected_<name>.json: the token ids that a
// real, independent tokenizer implementation (transformers.js, as packaged in
// @lenml/tokenizers) gives for every file of tests/data/tokenizer/corpus/, for
// the Qwen3 and DeepSeek-V3 tokenizers. tests/tokenizer/ compares Krasis'
// tokenizer against these ids.
//
// Usage (nothing is installed into the repository):
//   npm install --prefix /tmp/tokref @lenml/tokenizers@3.7.2
//   scripts/fetch_tokenizers
//   node tools/gen_tokenizer_refs.mjs /tmp/tokref
// The tokenizers are read from $KRASIS_TOKENIZERS_DIR/<name>/ (default
// ${KRASIS_CACHE:-~/.cache/krasis}/tokenizers/<name>/), as the tests do.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const prefix = process.argv[2];
if (!prefix) {
  console.error("usage: node tools/gen_tokenizer_refs.mjs <npm prefix holding @lenml/tokenizers>");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(prefix), "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const lenmlVersion = JSON.parse(
  fs.readFileSync(
    path.join(path.resolve(prefix), "node_modules", "@lenml", "tokenizers", "package.json"),
    "utf8"),
).version;

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dataDir = path.join(repo, "tests", "data", "tokenizer");
const corpusDir = path.join(dataDir, "corpus");
const cacheRoot =
  process.env.KRASIS_TOKENIZERS_DIR ||
  path.join(process.env.KRASIS_CACHE || path.join(os.homedir(), ".cache", "krasis"), "tokenizers");

const corpus = fs
  .readdirSync(corpusDir)
  .filter((f) => f.endsWith(".txt"))
  .sort()
  .map((f) => [f, fs.readFileSync(path.join(corpusDir, f), "utf8")]);

for (const name of ["qwen3", "deepseek_v3"]) {
  const dir = path.join(cacheRoot, name);
  const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: read("tokenizer.json"),
    tokenizerConfig: read("tokenizer_config.json"),
  });
  const lines = [];
  for (const [file, text] of corpus) {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    lines.push(`    ${JSON.stringify(file)}: ${JSON.stringify(ids)}`);
  }
  const out =
    "{\n" +
    `  "tokenizer": "@lenml/tokenizer-${name}@3.7.2",\n` +
    `  "reference": "@lenml/tokenizers ${lenmlVersion} (transformers.js) encode(text, {add_special_tokens: false})",\n` +
    `  "generator": "tools/gen_tokenizer_refs.mjs",\n` +
    '  "items": {\n' +
    lines.join(",\n") +
    "\n  }\n}\n";
  const target = path.join(dataDir, `expected_${name}.json`);
  fs.writeFileSync(target, out);
  console.log(`wrote ${target} (${corpus.length} items)`);
}
