// golive dashboard: live sections over server-sent events, countdowns.
// Without this script the page is complete and refreshes itself.
(function () {
  'use strict';
  function fmt(s) {
    s = Math.max(0, Math.floor(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + r + 's';
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll('[data-until]').forEach(function (el) {
      var t = Date.parse(el.getAttribute('data-until'));
      if (!isNaN(t)) el.textContent = t > now ? fmt((t - now) / 1000) + ' left' : 'expired';
    });
    document.querySelectorAll('time[data-since]').forEach(function (el) {
      var t = Date.parse(el.getAttribute('data-since'));
      if (!isNaN(t)) el.textContent = fmt((now - t) / 1000) + ' ago';
    });
  }
  tick();
  setInterval(tick, 1000);
  document.addEventListener('submit', function (e) {
    var msg = e.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  if (!window.EventSource) return;
  var live = document.getElementById('live');
  var failures = 0;
  var q = location.search || '';
  if (location.pathname === '/rollout') {
    var id = new URLSearchParams(q).get('id') || '';
    q = '?rollout=' + encodeURIComponent(id);
  }
  var es = new EventSource('/events' + q);
  ['approval', 'rollouts', 'dns', 'scaling', 'agents', 'history', 'audit', 'detail'].forEach(function (name) {
    es.addEventListener(name, function (e) {
      var el = document.getElementById(name);
      if (el) { el.innerHTML = e.data; tick(); }
      failures = 0;
    });
  });
  es.addEventListener('expired', function () { es.close(); location.reload(); });
  es.onopen = function () { if (live) { live.textContent = 'live'; live.className = 'live on'; } };
  es.onerror = function () {
    if (live) { live.textContent = 'reconnecting…'; live.className = 'live off'; }
    if (++failures > 5) location.reload();
  };
})();
