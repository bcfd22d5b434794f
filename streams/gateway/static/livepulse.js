/* LivePulse beacon: attendance and engagement of a web page, sent to a LivePulse gateway.
 *
 *   <script src="https://GATEWAY/v1/livepulse.js" data-write-key="WRITE_KEY" data-event-id="webinar-42"
 *           data-attendee-id="u-1001" async></script>
 *
 * Without data-attendee-id an anonymous id is kept in localStorage (one per browser). On load: a join; every
 * data-heartbeat-seconds (30) while the page is visible: a heartbeat (paused while hidden); on pagehide: a leave
 * via navigator.sendBeacon. Clicks on elements marked data-livepulse-cta="ID" are CTA clicks. The page may call
 * livepulse.chat(), .question(), .pollVote(pollId), .reaction(), .ctaClick(ctaId). No dependencies. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.livepulse && window.livepulse.version) { return; }
  var data = script.dataset;
  var endpoint = data.endpoint || new URL("/v1/collect", script.src).href;
  var eventId = data.eventId;
  var writeKey = data.writeKey;
  var heartbeatMs = Math.max(1, Number(data.heartbeatSeconds || 30)) * 1000;
  if (!eventId || !writeKey) { return; }

  function randomId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function anonymousId() {
    var key = "livepulse.anonymous_id";
    try {
      var known = window.localStorage.getItem(key);
      if (known) { return known; }
      var made = "anon-" + randomId();
      window.localStorage.setItem(key, made);
      return made;
    } catch (e) {  // storage disabled: an id for this page view only
      return "anon-" + randomId();
    }
  }

  var attendeeId = data.attendeeId || anonymousId();
  var pageView = randomId();  // with a counter, the id of every record this page sends (resends keep it)
  var seq = 0;
  var timer = null;

  function body(records) {
    return JSON.stringify({k: writeKey, e: eventId, a: attendeeId, c: data.client || "web", r: records});
  }

  function record(type, extra) {
    var r = {i: pageView + "." + (seq++), t: type, ts: Date.now()};
    for (var name in extra || {}) { r[name] = extra[name]; }
    return r;
  }

  // text/plain keeps the request "simple" (no CORS preflight) for fetch and sendBeacon alike.
  function post(records, attempt) {
    var payload = body(records);
    if (!window.fetch) { navigator.sendBeacon(endpoint, payload); return; }
    window.fetch(endpoint, {method: "POST", body: payload, keepalive: true, mode: "cors", credentials: "omit",
                            headers: {"Content-Type": "text/plain;charset=UTF-8"}})
      .then(function (response) {
        if ((response.status === 503 || response.status === 429) && attempt < 3) { retry(records, attempt); }
      }, function () { if (attempt < 3) { retry(records, attempt); } });
  }

  function retry(records, attempt) {  // the same records, the same ids: the gateway and worker count them once
    setTimeout(function () { post(records, attempt + 1); }, 2000 * (attempt + 1));
  }

  function send(type, extra) { post([record(type, extra)], 0); }

  function heartbeat() { send("heartbeat"); }

  function startHeartbeats() {
    if (timer === null && document.visibilityState === "visible") { timer = setInterval(heartbeat, heartbeatMs); }
  }

  function stopHeartbeats() {
    if (timer !== null) { clearInterval(timer); timer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { heartbeat(); startHeartbeats(); } else { stopHeartbeats(); }
  });

  window.addEventListener("pagehide", function () {
    stopHeartbeats();
    navigator.sendBeacon(endpoint, body([record("leave")]));
  });

  window.addEventListener("pageshow", function (e) {  // back from the back/forward cache: present again
    if (e.persisted) { send("join"); startHeartbeats(); }
  });

  document.addEventListener("click", function (e) {
    var el = e.target && e.target.closest ? e.target.closest("[data-livepulse-cta]") : null;
    if (el) { send("cta_click", {cta_id: el.getAttribute("data-livepulse-cta")}); }
  }, true);

  window.livepulse = {
    version: 1,
    attendeeId: function () { return attendeeId; },
    track: function (type, extra) { send(type, extra); },
    chat: function () { send("chat"); },
    question: function () { send("question"); },
    pollVote: function (pollId) { send("poll_vote", {poll_id: String(pollId)}); },
    reaction: function () { send("reaction"); },
    ctaClick: function (ctaId) { send("cta_click", {cta_id: String(ctaId)}); }
  };

  send("join");
  startHeartbeats();
}());
