/**
 * The documentation's code blocks, for the tests that run its examples (examples.test.ts) and check its claims.
 *
 * A block is a fenced block (```lang … ```), indented or not. Shell examples are `sh`, `bash`, `shell` and
 * `console` blocks; output shown on its own is a block with no language. A block is marked as not run by an HTML
 * comment on the nearest non-blank line above its fence: `<!-- not run: why -->`.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..", "..");

/** README.md and every page under docs/. */
export const DOC_FILES: readonly string[] = [
  "README.md",
  ...readdirSync(join(ROOT, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => `docs/${f}`),
];

export interface Block {
  /** Relative to the project: `README.md`, `docs/serving.md`. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  /** The lines between the fences, the block's indentation removed. */
  lines: string[];
  /** The reason given by `<!-- not run: … -->` above the fence. */
  notRun?: string;
}

const SHELL = new Set(["sh", "bash", "shell", "console", ""]);

export function docText(file: string): string {
  return readFileSync(join(ROOT, file), "utf8");
}

export function blocksOf(file: string): Block[] {
  const lines = docText(file).split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j]!)) body.push(lines[j++]!.slice(indent));
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === "") k--;
    const marker = k >= 0 ? /^\s*<!-- not run: (.*?) -->\s*$/.exec(lines[k]!) : null;
    out.push({ file, line: i + 1, lang: open[2]!, lines: body, ...(marker ? { notRun: marker[1]!.trim() } : {}) });
    i = j;
  }
  return out;
}

/** Shell examples and shown output of every page. */
export function shellBlocks(): Block[] {
  return DOC_FILES.flatMap(blocksOf).filter((b) => SHELL.has(b.lang));
}

/** The first block of `lang` in `file` after the line holding `after`. */
export function blockAfter(file: string, after: string, lang: string): Block {
  const at = docText(file)
    .split("\n")
    .findIndex((l) => l.includes(after));
  if (at < 0) throw new Error(`${file} no longer says ${JSON.stringify(after)}`);
  const b = blocksOf(file).find((x) => x.line > at && x.lang === lang);
  if (!b) throw new Error(`${file}: no ${lang} block after ${JSON.stringify(after)}`);
  return b;
}

/**
 * A block's commands: continuation lines (`\` at the end) joined, comment-only and blank lines dropped, a trailing
 * `# comment` cut, and a transcript's `$ ` prompt removed.
 */
export function commandsOf(block: Block): string[] {
  const out: string[] = [];
  let pending = "";
  // A transcript: the prompted lines are the commands, the rest is their output.
  const transcript = block.lines.some((l) => l.startsWith("$ "));
  for (const raw of transcript ? block.lines.filter((l) => l.startsWith("$ ")) : block.lines) {
    const line = raw.startsWith("$ ") ? raw.slice(2) : raw;
    if (pending === "" && (line.trim() === "" || line.trim().startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    out.push(stripComment(pending + line).trim());
    pending = "";
  }
  return out;
}

/** `cmd  # says what` → `cmd`; a `#` inside quotes or a word (`a#b`) stays. */
export function stripComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i).trimEnd();
  }
  return line;
}

/**
 * The value of a code span in a page's prose, found by a fixed start: `codeSpan("docs/serving.md", "cannot listen
 * on")` is the backticked text that begins so.
 */
export function codeSpan(file: string, startsWith: string): string {
  const text = docText(file).replace(/\n\s*/g, " ");
  const at = text.indexOf(`\`${startsWith}`);
  if (at < 0) throw new Error(`${file} no longer has a code span starting ${JSON.stringify(startsWith)}`);
  return text.slice(at + 1, text.indexOf("`", at + 1));
}
