"""The page's stylesheet and script, served from fixed routes (never from the file system).

Kept as Python strings so that the package needs no data files and no request path is ever
mapped onto a directory. The script only adds keyboard shortcuts; the page works without it.
"""

STYLE_CSS = """
:root {
  --ink: #1d2733; --muted: #5b6775; --line: #d5dbe2; --paper: #f5f7f9; --card: #ffffff;
  --accent: #2f6690; --accent-ink: #ffffff; --viewer: #101418; --chosen: #e3eef7;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--paper);
}
* { box-sizing: border-box; }
body { margin: 0; }
.topbar { display: flex; justify-content: space-between; align-items: center;
  padding: .6rem 1.25rem; background: var(--card); border-bottom: 1px solid var(--line); }
.brand { font-weight: 600; letter-spacing: .01em; }
.who { color: var(--muted); display: flex; gap: .75rem; align-items: center; }
.who form { margin: 0; }
.linklike { background: none; border: 0; color: var(--accent); cursor: pointer; font: inherit;
  padding: 0; text-decoration: underline; }
main { max-width: 46rem; margin: 0 auto; padding: 1.25rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: .5rem;
  padding: 1.5rem; margin-top: 2rem; }
h1 { font-size: 1.4rem; margin: 0 0 .75rem; }
p { line-height: 1.5; }
.muted { color: var(--muted); }
label { display: block; font-weight: 600; margin: 1rem 0 .3rem; }
input[type=text], input[type=password], textarea { width: 100%; font: inherit;
  padding: .5rem .6rem; border: 1px solid var(--line); border-radius: .35rem;
  background: #fff; color: var(--ink); }
textarea { resize: vertical; min-height: 3.2rem; }
.help { font-size: .85rem; color: var(--muted); margin: .25rem 0 0; }
.error { background: #fdecea; border: 1px solid #f5c2bd; color: #8a1c12;
  padding: .6rem .8rem; border-radius: .35rem; }
.primary { margin-top: 1.25rem; font: inherit; font-weight: 600; padding: .6rem 1.4rem;
  background: var(--accent); color: var(--accent-ink); border: 0; border-radius: .35rem;
  cursor: pointer; }
.progress-row { display: flex; align-items: center; gap: .75rem; font-size: .9rem;
  color: var(--muted); }
progress { flex: 1; height: .6rem; appearance: none; border: 0; border-radius: .3rem;
  background: var(--line); overflow: hidden; }
progress::-webkit-progress-bar { background: var(--line); }
progress::-webkit-progress-value { background: var(--accent); }
progress::-moz-progress-bar { background: var(--accent); }
.viewer { margin: 1rem 0; background: var(--viewer); border-radius: .5rem; display: flex;
  justify-content: center; align-items: center; padding: .75rem; }
.viewer img { display: block; width: min(52vh, 100%); height: auto; max-width: 40rem; }
.choices { display: grid; grid-template-columns: repeat(3, 1fr); gap: .75rem; }
.choice { font: inherit; font-size: 1.1rem; font-weight: 600; padding: .8rem .5rem;
  border: 2px solid var(--line); border-radius: .45rem; background: var(--card);
  color: var(--ink); cursor: pointer; }
.choice:hover, .choice:focus-visible { border-color: var(--accent); outline: none; }
.choice[aria-pressed=true] { border-color: var(--accent); background: var(--chosen); }
kbd { display: inline-block; min-width: 1.4em; padding: 0 .3em; margin-right: .35em;
  border: 1px solid var(--line); border-bottom-width: 2px; border-radius: .25rem;
  font: .85em ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); }
.current { margin: .75rem 0 0; font-size: .95rem; }
.pager { display: flex; justify-content: space-between; margin-top: 1rem; }
.pager a { color: var(--accent); }
.pager .off { visibility: hidden; }
.hint { font-size: .85rem; color: var(--muted); text-align: center; margin-top: 1.25rem; }
"""

STUDY_JS = """
// Keyboard shortcuts: r / f / u cast a vote, arrow keys move; ignored while typing a note.
(function () {
  const form = document.getElementById("vote-form");
  if (!form) return;
  let sent = false;
  form.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // no double votes from double clicks
    sent = true;
  });
  document.addEventListener("keydown", function (event) {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "textarea" || tag === "input") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    const button = form.querySelector('button[data-key="' + key + '"]');
    if (button) { event.preventDefault(); form.requestSubmit(button); return; }
    const link = document.querySelector('a[data-key="' + event.key + '"]');
    if (link) { event.preventDefault(); window.location.assign(link.href); }
  });
})();
"""
