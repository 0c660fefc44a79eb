"""The wiki server's search page (served at /): a search box that asks
/search as you type and lists the titles as links to /wiki/<title>."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{name}} - pyparallel wiki</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 44em; margin: 2em auto; padding: 0 1em; }
  input { font-size: 1.2em; width: 100%; padding: .4em; box-sizing: border-box; }
  #results { list-style: none; padding: 0; }
  #results li { padding: .2em 0; }
  #status { color: #666; font-size: .9em; min-height: 1.4em; }
</style>
</head>
<body>
<h1>{{name}}</h1>
<input id="q" type="search" placeholder="Search titles" autocomplete="off" autofocus>
<div id="status"></div>
<ul id="results"></ul>
<p><a href="/stats">stats</a></p>
<script>
"use strict";
const q = document.getElementById("q");
const results = document.getElementById("results");
const status = document.getElementById("status");
let latest = 0;
function url(title) {
  return "/wiki/" + encodeURIComponent(title.replace(/ /g, "_"));
}
async function search() {
  const ask = ++latest, text = q.value;
  if (!text.trim()) { results.replaceChildren(); status.textContent = ""; return; }
  try {
    const r = await fetch("/search?limit=20&q=" + encodeURIComponent(text));
    const data = await r.json();
    if (ask !== latest) return;              // a newer query answered first
    results.replaceChildren(...data.titles.map(t => {
      const li = document.createElement("li"), a = document.createElement("a");
      a.href = url(t);
      a.textContent = t;
      li.append(a);
      return li;
    }));
    status.textContent = data.total + " title" + (data.total === 1 ? "" : "s") +
                         " start with \\u201c" + text + "\\u201d";
  } catch (e) {
    if (ask === latest) status.textContent = "search failed: " + e;
  }
}
q.addEventListener("input", search);
</script>
</body>
</html>
"""
