// Where the console is: the page and its filters live in the URL's fragment (`#/tasks?queue=q&state=dead`),
// so a view can be bookmarked and shared, and Back goes to the previous filter.

/** The current fragment as `{path, params}`. */
export function route() {
  const frag = location.hash.replace(/^#/, '') || '/';
  const [path, qs] = frag.split('?', 2);
  return { path, params: new URLSearchParams(qs || '') };
}

/** Goes to `path` with the non-empty `params` (a new history entry, so Back works). */
export function go(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  location.hash = `#${path}${s ? `?${s}` : ''}`;
}
