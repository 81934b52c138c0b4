// A small Markdown renderer for model cards. It builds React elements, never HTML strings, so
// any markup in the text is shown as text (React escapes it): there is no innerHTML anywhere.
//
// Supported: headings, paragraphs, emphasis (** and * or _), inline code, fenced code, links
// (http, https, mailto and #anchors only; others render as their text), bullet and numbered
// lists, GitHub-style tables, block quotes and rules. Images render as their alt text (a card
// never loads a remote image).

import { Fragment, type ReactNode } from "react";

const SAFE_URL = /^(https?:\/\/|mailto:|#)/i;

/** Whether a link target may become an <a href> (no javascript:, data:, relative repo paths). */
export function isSafeUrl(url: string): boolean {
  // Browsers ignore control characters and whitespace inside a scheme: strip them first.
  // eslint-disable-next-line no-control-regex
  const cleaned = url.replace(/[\u0000-\u0020\u007f]/g, "");
  return SAFE_URL.test(cleaned);
}

// --- Inline -----------------------------------------------------------------------------------

function findClosing(text: string, marker: string, from: number): number {
  let i = text.indexOf(marker, from);
  while (i !== -1 && text[i - 1] === "\\") i = text.indexOf(marker, i + 1);
  return i;
}

/** Parses inline Markdown into React nodes. */
export function renderInline(text: string, keyPrefix = "i"): ReactNode[] {
  const out: ReactNode[] = [];
  let buffer = "";
  let key = 0;
  const flush = () => {
    if (buffer) out.push(buffer);
    buffer = "";
  };
  const k = () => `${keyPrefix}-${key++}`;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    const rest = text.slice(i);
    if (c === "\\" && i + 1 < text.length && /[\\`*_[\]()#+\-.!|<>]/.test(text[i + 1]!)) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const ticks = /^`+/.exec(rest)![0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end !== -1) {
        flush();
        out.push(<code key={k()}>{text.slice(i + ticks.length, end).trim()}</code>);
        i = end + ticks.length;
        continue;
      }
    }
    if (rest.startsWith("**") || rest.startsWith("__")) {
      const marker = rest.slice(0, 2);
      const end = findClosing(text, marker, i + 2);
      if (end > i + 2) {
        flush();
        out.push(<strong key={k()}>{renderInline(text.slice(i + 2, end), k())}</strong>);
        i = end + 2;
        continue;
      }
    }
    if ((c === "*" || c === "_") && text[i + 1] !== " " && text[i + 1] !== c) {
      // `_` inside a word (snake_case) is not emphasis.
      const wordBefore = c === "_" && i > 0 && /\w/.test(text[i - 1]!);
      const end = findClosing(text, c, i + 1);
      const wordAfter = c === "_" && end !== -1 && /\w/.test(text[end + 1] ?? "");
      if (!wordBefore && end > i + 1 && !wordAfter && text[end - 1] !== " ") {
        flush();
        out.push(<em key={k()}>{renderInline(text.slice(i + 1, end), k())}</em>);
        i = end + 1;
        continue;
      }
    }
    if (c === "!" && text[i + 1] === "[") {
      const image = /^!\[([^\]]*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)/.exec(rest);
      if (image) {
        buffer += image[1] ? `[image: ${image[1]}]` : "";
        i += image[0].length;
        continue;
      }
    }
    if (c === "[") {
      const link = /^\[((?:[^\]\\]|\\.)*)\]\(([^)\s]*)(?:\s+"[^"]*")?\)/.exec(rest);
      if (link) {
        flush();
        const [whole, label = "", href = ""] = link;
        const children = renderInline(label, k());
        if (isSafeUrl(href)) {
          const external = /^https?:/i.test(href);
          out.push(
            <a
              key={k()}
              href={href}
              {...(external ? { rel: "noopener noreferrer", target: "_blank" } : {})}
            >
              {children}
            </a>,
          );
        } else {
          out.push(<Fragment key={k()}>{children}</Fragment>);
        }
        i += whole.length;
        continue;
      }
    }
    if (c === "<") {
      const auto = /^<(https?:\/\/[^>\s]+)>/.exec(rest);
      if (auto) {
        flush();
        out.push(
          <a key={k()} href={auto[1]} rel="noopener noreferrer" target="_blank">
            {auto[1]}
          </a>,
        );
        i += auto[0].length;
        continue;
      }
    }
    buffer += c;
    i += 1;
  }
  flush();
  return out;
}

// --- Blocks -----------------------------------------------------------------------------------

const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const FENCE = /^\s*(```|~~~)/;
const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEPARATOR = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
const QUOTE = /^\s*>\s?(.*)$/;

function splitRow(line: string): string[] {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells: string[] = [];
  let cell = "";
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      cell += "|";
      i++;
    } else if (row[i] === "|") {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += row[i];
    }
  }
  cells.push(cell.trim());
  return cells;
}

function alignments(separator: string): ("left" | "right" | "center" | undefined)[] {
  return splitRow(separator).map((cell) => {
    const left = cell.startsWith(":");
    const right = cell.endsWith(":");
    if (left && right) return "center";
    if (right) return "right";
    if (left) return "left";
    return undefined;
  });
}

function isBlockStart(line: string, next: string | undefined): boolean {
  return (
    HEADING.test(line) ||
    RULE.test(line) ||
    FENCE.test(line) ||
    LIST_ITEM.test(line) ||
    QUOTE.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEPARATOR.test(next) && next.includes("-"))
  );
}

/** Renders Markdown text as React elements. `headingOffset` shifts heading levels (# -> h2). */
export function renderMarkdown(markdown: string, headingOffset = 0): ReactNode[] {
  const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
  const blocks: ReactNode[] = [];
  let i = 0;
  let key = 0;
  const k = () => `b${key++}`;

  while (i < lines.length) {
    const line = lines[i]!;
    const next = lines[i + 1];
    if (!line.trim()) {
      i++;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const body: string[] = [];
      i++;
      while (i < lines.length && !lines[i]!.trim().startsWith(fence[1]!)) body.push(lines[i++]!);
      i++;
      blocks.push(
        <pre key={k()}>
          <code>{body.join("\n")}</code>
        </pre>,
      );
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1]!.length + headingOffset);
      const Tag = `h${level}` as "h1";
      const id = heading[2]!
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, "-")
        .replace(/^-|-$/g, "");
      const hkey = k();
      blocks.push(
        <Tag key={hkey} id={id || undefined}>
          {renderInline(heading[2]!, hkey)}
        </Tag>,
      );
      i++;
      continue;
    }
    if (RULE.test(line)) {
      blocks.push(<hr key={k()} />);
      i++;
      continue;
    }
    if (line.includes("|") && next !== undefined && TABLE_SEPARATOR.test(next) && next.includes("-")) {
      const header = splitRow(line);
      const align = alignments(next);
      const rows: string[][] = [];
      i += 2;
      while (i < lines.length && lines[i]!.trim() && lines[i]!.includes("|")) {
        rows.push(splitRow(lines[i]!));
        i++;
      }
      const tkey = k();
      blocks.push(
        <div className="table-scroll" key={tkey} tabIndex={0} role="region" aria-label="Table">
          <table>
            <thead>
              <tr>
                {header.map((cell, c) => (
                  <th key={c} scope="col" style={align[c] ? { textAlign: align[c] } : undefined}>
                    {renderInline(cell, `${tkey}h${c}`)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.map((row, r) => (
                <tr key={r}>
                  {header.map((_, c) => (
                    <td key={c} style={align[c] ? { textAlign: align[c] } : undefined}>
                      {renderInline(row[c] ?? "", `${tkey}r${r}c${c}`)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>,
      );
      continue;
    }
    const item = LIST_ITEM.exec(line);
    if (item) {
      const ordered = /\d/.test(item[2]!);
      const items: string[] = [];
      const start = ordered ? parseInt(item[2]!, 10) : 1;
      while (i < lines.length) {
        const current = lines[i]!;
        const m = LIST_ITEM.exec(current);
        if (m && /\d/.test(m[2]!) === ordered) {
          items.push(m[3]!);
          i++;
        } else if (current.trim() && /^\s+/.test(current) && items.length) {
          // An indented line continues the item above.
          items[items.length - 1] += ` ${current.trim()}`;
          i++;
        } else {
          break;
        }
      }
      const lkey = k();
      const children = items.map((text, n) => <li key={n}>{renderInline(text, `${lkey}-${n}`)}</li>);
      blocks.push(
        ordered ? (
          <ol key={lkey} start={start !== 1 ? start : undefined}>
            {children}
          </ol>
        ) : (
          <ul key={lkey}>{children}</ul>
        ),
      );
      continue;
    }
    if (QUOTE.test(line)) {
      const body: string[] = [];
      while (i < lines.length && QUOTE.test(lines[i]!)) body.push(QUOTE.exec(lines[i++]!)![1]!);
      blocks.push(<blockquote key={k()}>{renderMarkdown(body.join("\n"), headingOffset)}</blockquote>);
      continue;
    }
    const paragraph: string[] = [line.trim()];
    i++;
    while (i < lines.length && lines[i]!.trim() && !isBlockStart(lines[i]!, lines[i + 1])) {
      paragraph.push(lines[i]!.trim());
      i++;
    }
    const pkey = k();
    blocks.push(<p key={pkey}>{renderInline(paragraph.join(" "), pkey)}</p>);
  }
  return blocks;
}

export function Markdown({ text, headingOffset = 0 }: { text: string; headingOffset?: number }) {
  return <div className="markdown">{renderMarkdown(text, headingOffset)}</div>;
}
