// Live progress of an upload: polls its progress every 2 s (the page works without it: a
// reload shows the same figures).
(function () {
  var box = document.getElementById("progress");
  if (!box) { return; }
  var bar = document.getElementById("bar");
  var text = document.getElementById("progress-text");
  var results = document.getElementById("results");
  function update() {
    fetch(box.dataset.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { return; }
        bar.max = p.total;
        bar.value = p.done;
        bar.textContent = p.done + " of " + p.total;
        text.textContent = p.done + " of " + p.total + " done";
        Object.keys(p.counts).forEach(function (name) {
          var cell = box.querySelector('[data-count="' + name + '"]');
          if (cell) { cell.textContent = p.counts[name]; }
        });
        if (p.finished) { results.hidden = false; } else { setTimeout(update, 2000); }
      })
      .catch(function () { setTimeout(update, 5000); });
  }
  if (bar.value < bar.max) { setTimeout(update, 2000); }
}());
