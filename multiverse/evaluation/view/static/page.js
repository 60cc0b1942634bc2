// Filters the samples (all / correct / wrong / forked / not forked, by side) and shows the counts; no network.
(function () {
  const samples = Array.from(document.querySelectorAll(".sample"));
  const tests = {
    all: () => true,
    correct: (s) => s.dataset.correct === "1",
    wrong: (s) => s.dataset.correct === "0",
    forked: (s) => s.dataset.forked === "1",
    unforked: (s) => s.dataset.forked === "0",
  };
  const state = { filter: "all", side: "all" };
  const bySide = (s) => state.side === "all" || s.dataset.side === state.side;

  function apply() {
    let shown = 0;
    for (const s of samples) {
      const visible = bySide(s) && tests[state.filter](s);
      s.hidden = !visible;
      if (visible) shown += 1;
    }
    for (const b of document.querySelectorAll("button[data-filter]")) {
      const key = b.dataset.filter;
      b.classList.toggle("on", key === state.filter);
      b.querySelector(".count").textContent = samples.filter((s) => bySide(s) && tests[key](s)).length;
    }
    document.getElementById("shown").textContent = shown;
    document.getElementById("total").textContent = samples.length;
  }

  for (const b of document.querySelectorAll("button[data-filter]")) {
    b.addEventListener("click", () => { state.filter = b.dataset.filter; apply(); });
  }
  const side = document.getElementById("side");
  if (side) side.addEventListener("change", () => { state.side = side.value; apply(); });
  apply();
})();
