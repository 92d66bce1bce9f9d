/**
 * The dashboard's only script, served as /static/app.js (never inline: the Content-Security-Policy
 * allows scripts from our own origin alone). It is a progressive extra: every page is complete
 * without it, and what it adds is live updates.
 *
 * What it does: a page marks the parts that change with `data-live="NAME"` and names itself in
 * `<body data-live-path="/path">`. The script opens one EventSource on `/live?path=...`; the
 * server renders those parts again whenever something changes and sends them as one `regions`
 * event, `{"NAME": "<escaped html>", ...}`, which the script puts in place. The server escaped
 * every value already (html.ts), so innerHTML receives markup we made. A `status` element
 * (`data-live-status`) says whether the stream is connected. EventSource reconnects by itself
 * (the server ends each stream after a minute, so each reconnect authenticates again); when the
 * server refuses a stream and the API says the session is gone (401), the page reloads, which
 * shows the login form.
 *
 * It is kept as text here, not compiled from TypeScript, because the project's TypeScript has no
 * DOM library; a unit test parses it so a syntax error cannot ship.
 */
export const clientScript = `'use strict';
(function () {
  var body = document.body;
  var path = body && body.getAttribute('data-live-path');
  var status = document.querySelector('[data-live-status]');
  function say(text, state) {
    if (!status) return;
    status.textContent = text;
    status.setAttribute('data-state', state);
  }
  if (!path || typeof EventSource !== 'function') {
    say('not live (reload for new numbers)', 'off');
    return;
  }
  var updates = 0;
  var last = {};
  var source = new EventSource('/live?path=' + encodeURIComponent(path));
  source.addEventListener('open', function () {
    say('live', 'on');
  });
  source.addEventListener('error', function () {
    if (source.readyState !== EventSource.CLOSED) {
      say('reconnecting…', 'retry');
      return;
    }
    // The server refused the stream: if the session is gone, a reload shows the login form.
    say('not live (reload for new numbers)', 'off');
    fetch('/api/v1/whoami', { credentials: 'same-origin' }).then(function (r) {
      if (r.status === 401) window.location.reload();
    });
  });
  source.addEventListener('regions', function (event) {
    var regions;
    try {
      regions = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    Object.keys(regions).forEach(function (name) {
      if (last[name] === regions[name]) return;
      last[name] = regions[name];
      var nodes = document.querySelectorAll('[data-live="' + name.replace(/[^A-Za-z0-9_-]/g, '') + '"]');
      for (var i = 0; i < nodes.length; i++) {
        nodes[i].innerHTML = regions[name];
      }
    });
    updates += 1;
    body.setAttribute('data-live-updates', String(updates));
    say('live, updated ' + new Date().toLocaleTimeString(), 'on');
  });
})();
`;
