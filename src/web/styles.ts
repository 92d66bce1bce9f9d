/**
 * The dashboard's stylesheet, served as /static/app.css (the Content-Security-Policy refuses
 * inline styles and style attributes, so every colour is a class here). Red means lost or down,
 * amber degraded or draining, green healthy; zones get six distinct hues, cycled.
 */
export const stylesheet = `
:root { --ok: #1a7f37; --warn: #b7791f; --bad: #c62828; --muted: #6b7280; --line: #d9dde3; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #1f2328; background: var(--bg); }
header.top { display: flex; gap: 1.2em; align-items: center; padding: .6em 1.2em; background: #22272e; color: #fff; }
header.top a { color: #cdd9e5; text-decoration: none; }
header.top nav a { margin-right: 1em; }
header.top a:hover, header.top a.here { color: #fff; text-decoration: underline; }
header.top .brand { font-weight: 700; color: #fff; margin-right: .5em; }
header.top .who { margin-left: auto; color: #adbac7; }
header.top form { display: inline; }
header.top button { background: none; border: 1px solid #768390; color: #cdd9e5; border-radius: 4px; cursor: pointer; }
main { padding: 1em 1.2em 3em; max-width: 1280px; }
h1 { font-size: 1.4em; margin: .2em 0 .6em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
section.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: .8em; }
.card table { width: 100%; }
.charts { display: flex; flex-wrap: wrap; gap: .8em; }
.charts > figure { margin: 0; flex: 1 1 420px; max-width: 640px; }
.charts figcaption { font-size: 12px; color: var(--muted); }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .7em .9em; }
.card h2 { margin-top: 0; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); margin: .3em 0; }
th, td { padding: .3em .7em; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.down td, tr.bad td { background: #fdecea; }
tr.draining td, tr.warn td { background: #fff6e0; }
.verdict { display: inline-block; padding: .3em .9em; border-radius: 6px; font-weight: 700; font-size: 1.2em; color: #fff; }
.verdict.healthy { background: var(--ok); }
.verdict.degraded { background: var(--warn); }
.verdict.bad, .verdict.unreadable, .verdict.at-risk, .verdict.unknown { background: var(--bad); }
.state { font-weight: 600; }
.state.up, .state.healthy, .state.ok { color: var(--ok); }
.state.down, .state.bad, .state.unreadable, .state.at-risk, .state.missing { color: var(--bad); }
.state.draining, .state.degraded, .state.rebuilding, .state.detached { color: var(--warn); }
.muted { color: var(--muted); }
.big { font-size: 1.6em; font-weight: 700; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 120px; height: 9px; background: #e5e7eb; border-radius: 4px; overflow: hidden; vertical-align: middle; }
.bar > span { display: block; height: 100%; background: #4b7bec; }
${Array.from({ length: 21 }, (_, i) => `.bar > span.w${i * 5} { width: ${i * 5}%; }`).join('\n')}
svg.chart { width: 100%; max-width: 640px; height: auto; background: #fff; border: 1px solid var(--line); border-radius: 4px; }
svg.chart .grid { stroke: #e5e7eb; stroke-width: 1; }
svg.chart .axis { fill: var(--muted); font-size: 10px; }
svg.chart .line { fill: none; stroke-width: 2; }
svg.chart .read, .key.read { stroke: #2f81f7; color: #2f81f7; }
svg.chart .write, .key.write { stroke: #d1242f; color: #d1242f; }
.key { font-weight: 700; }
table.grid td { padding: 0; border: 1px solid #fff; }
table.grid td.shard { width: 3.2em; height: 1.6em; text-align: center; font-size: 11px; color: #fff; }
table.grid td.shard.missing { background: #fdecea; color: var(--bad); font-weight: 700; outline: 2px solid var(--bad); outline-offset: -2px; }
table.grid th { font-size: 11px; padding: 0 .3em; }
.zone-0 { background: #2f81f7; } .zone-1 { background: #8250df; } .zone-2 { background: #1a7f37; }
.zone-3 { background: #bf8700; } .zone-4 { background: #cf222e; } .zone-5 { background: #0a7ea4; }
span.zone-chip { display: inline-block; width: .9em; height: .9em; border-radius: 2px; vertical-align: middle; margin-right: .3em; }
ul.tree { list-style: none; padding-left: 1.2em; margin: .2em 0; border-left: 1px dashed var(--line); }
ul.tree > li { margin: .2em 0; }
form.inline { display: inline; }
form.action { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .6em .8em; margin: .4em 0; display: flex; gap: .6em; align-items: end; flex-wrap: wrap; }
form.action label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input, select { font: inherit; padding: .25em .4em; border: 1px solid #b6bdc6; border-radius: 4px; }
button { font: inherit; padding: .3em .8em; border-radius: 4px; border: 1px solid #8c959f; background: #f3f4f6; cursor: pointer; }
button.danger { border-color: var(--bad); color: var(--bad); }
button.primary { background: #1f6feb; border-color: #1f6feb; color: #fff; }
code { white-space: nowrap; }
.confirm form { display: flex; gap: 1em; align-items: center; }
.confirm { background: #fff; border: 2px solid var(--warn); border-radius: 6px; padding: 1em 1.2em; max-width: 640px; }
.notice { padding: .5em .8em; border-radius: 6px; margin: .5em 0; background: #e6f4ea; border: 1px solid var(--ok); }
.notice.error { background: #fdecea; border-color: var(--bad); }
.login { max-width: 420px; margin: 4em auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 1.4em; }
.login input { width: 100%; margin: .4em 0 .8em; }
[data-live-status] { font-size: 12px; color: var(--muted); }
[data-live-status][data-state="on"]::before { content: "● "; color: var(--ok); }
[data-live-status][data-state="retry"]::before { content: "● "; color: var(--warn); }
`;
