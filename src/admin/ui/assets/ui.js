// driftd on-call page: the release and contain form. The bearer token is read from the form
// when the button is pressed and sent in the Authorization header of that one request; it is
// never stored (no cookie, no localStorage). Every text from driftd is set with textContent.
"use strict";
(function () {
  var form = document.getElementById("action-form");
  if (!form) {
    return;
  }
  var out = document.getElementById("result");
  function show(text, kind) {
    out.textContent = text;
    out.className = "result " + kind;
    out.setAttribute("data-kind", kind);
  }
  function value(id) {
    return document.getElementById(id).value.trim();
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var action = ev.submitter && ev.submitter.value === "contain" ? "contain" : "release";
    var token = value("token");
    var operator = value("operator");
    var reason = value("reason");
    if (!token || !operator || !reason) {
      show(action + " not sent: token, operator and reason are required", "error");
      return;
    }
    var url = "/v1/deployments/" + encodeURIComponent(form.getAttribute("data-deployment")) + "/" + action;
    show(action + ": sending…", "pending");
    fetch(url, {
      method: "POST",
      credentials: "omit",
      cache: "no-store",
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ reason: reason, operator: operator })
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (r.ok) {
          var now = b.pending_release ? "release pending approval" : "phase now " + b.phase;
          show(action + " accepted (HTTP " + r.status + "): " + now + ". Reload the page to see it.", "ok");
        } else {
          show(action + " refused (HTTP " + r.status + "): " + (b.error || "no reason given"), "error");
        }
      });
    }, function () {
      show(action + " failed: driftd did not answer", "error");
    });
  });
})();
