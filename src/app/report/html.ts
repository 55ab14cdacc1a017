/**
 * The pieces every report page is built from: escaping, the page shell (inline CSS and script,
 * nothing fetched from a network), tables and lines to copy. Pages are strings: a builder takes
 * data and returns HTML, and the caller writes it.
 */

/** Text as HTML text or attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A relative file path as an href/src: each segment URL-encoded, so `#`, `?` and spaces stay in the name. */
export function fileHref(relative: string): string {
  return relative.split(/[\\/]/).map(encodeURIComponent).join('/');
}

const STYLE = `
:root { color-scheme: light; --fg: #1d2330; --muted: #5d6678; --line: #dde1e8; --panel: #f6f7f9; --accent: #c33; --val: #27a; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 20px 24px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 8px; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; font-weight: 600; vertical-align: middle; margin-left: 8px; color: #fff; background: #777; }
.badge.live { background: #2a8a3e; } .badge.finished { background: #3a5a9a; } .badge.interrupted { background: #b07a00; } .badge.failed { background: var(--accent); }
.notice { background: var(--panel); border-left: 4px solid #b07a00; padding: 8px 12px; margin: 10px 0; }
table { border-collapse: collapse; }
td, th { text-align: left; vertical-align: top; padding: 3px 14px 3px 0; }
th { color: var(--muted); font-weight: 500; white-space: nowrap; }
.kv td { word-break: break-word; }
.copy-line { display: flex; gap: 8px; align-items: flex-start; margin: 4px 0 10px; }
.copy-line code { flex: 1; display: block; background: var(--panel); border: 1px solid var(--line); border-radius: 4px; padding: 6px 8px; white-space: pre-wrap; overflow-wrap: anywhere; font: 12.5px/1.4 ui-monospace, Menlo, Consolas, monospace; }
.cards .copy-line { flex-direction: column; align-items: flex-end; } .cards .copy-line code { align-self: stretch; }
button.copy { font: inherit; font-size: 12px; padding: 5px 10px; border: 1px solid var(--line); border-radius: 4px; background: #fff; cursor: pointer; }
button.copy:hover { background: var(--panel); }
.chart svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.legend span { margin-right: 16px; color: var(--muted); } .legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 5px; }
.timeline { display: flex; flex-wrap: wrap; gap: 14px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 14px; }
figure { margin: 0; flex: 0 0 auto; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figure img { display: block; image-rendering: pixelated; width: 100%; height: auto; min-width: 128px; border-radius: 3px; background: #fff; }
.timeline figure img { width: 150px; }
.strips { display: flex; flex-direction: column; gap: 14px; align-items: flex-start; } .strips figure img { width: auto; max-width: 100%; }
figcaption { margin-top: 6px; font-size: 12.5px; }
figcaption .step { font-weight: 600; }
figcaption .prompt { color: var(--muted); }
dl.info { display: grid; grid-template-columns: auto 1fr; gap: 1px 8px; margin: 6px 0; font-size: 12px; }
dl.info dt { color: var(--muted); } dl.info dd { margin: 0; word-break: break-word; }
details summary { cursor: pointer; color: var(--muted); margin: 6px 0; }
a { color: #2456a6; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
`;

/**
 * The reload of a live page (data-reload on body: seconds) and the copy buttons. A page without
 * data-reload never reloads. Copying falls back to selecting the line where the clipboard API is
 * not offered (some browsers refuse it on file:// pages).
 */
const SCRIPT = `
(() => {
  const every = Number(document.body.dataset.reload || 0);
  if (every > 0) setTimeout(() => location.reload(), every * 1000);
  for (const button of document.querySelectorAll('button.copy')) {
    button.addEventListener('click', () => {
      const code = button.parentElement.querySelector('code');
      const done = () => { button.textContent = 'copied'; setTimeout(() => { button.textContent = 'copy'; }, 1500); };
      const select = () => {
        const range = document.createRange();
        range.selectNodeContents(code);
        const selection = getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        try { document.execCommand('copy'); } catch (e) { /* the line stays selected for Ctrl-C */ }
        done();
      };
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code.textContent).then(done, select);
      else select();
    });
  }
})();
`;

export interface PageOptions {
  title: string;
  /** Reload the page every this many seconds (a live run); absent: never. */
  reloadSeconds?: number;
}

/** A whole HTML document around `body` (HTML), self-contained. */
export function htmlPage(options: PageOptions, body: string): string {
  const reload = options.reloadSeconds !== undefined && options.reloadSeconds > 0 ? ` data-reload="${options.reloadSeconds}"` : '';
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    // No network: nothing but this file and the images beside it.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">`,
    `<title>${escapeHtml(options.title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    `<body${reload}>`,
    body,
    `<script>${SCRIPT}</script>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** A command line in a box with a copy button. */
export function copyLine(text: string): string {
  return `<div class="copy-line"><code>${escapeHtml(text)}</code><button class="copy" type="button">copy</button></div>`;
}

/** Rows of (label, HTML value) as a two-column table. */
export function keyValueTable(rows: readonly (readonly [string, string])[]): string {
  if (rows.length === 0) return '';
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${v}</td></tr>`).join('')}</table>`;
}

/** A table with a header row; cells are HTML. */
export function dataTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const th = head.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  return `<table><thead><tr>${th}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}
