#!/usr/bin/env python3
"""Fails when the files of a crate's `src/` import each other in a circle.

    .ci/module-cycles.py scheduler/src agent/src ...

Each file is a module (`a/mod.rs` and `a.rs` are module `a`). An edge A -> B is any path that names B from
A's code outside comments: `use crate::b::...`, `super::...`, `self::b::...`, or an inline `crate::b::X`. A
`mod b;` declaration is not an edge (a parent may declare children that use it). Prints every circle found
(as a list of files) and exits 1, or prints nothing and exits 0.
"""
import os
import re
import sys


def modules(src):
    """Module path (tuple) -> file, for every .rs file under `src`."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            out[tuple(parts)] = os.path.join(root, f)
    return out


def code_lines(path):
    """The file's code without comments or string contents (roughly: enough for paths)."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Unit tests sit at the end of a file in `mod tests`, where `super` is the file itself: not edges.
    text = re.split(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod tests\s*\{", text)[0]
    lines = []
    for line in text.splitlines():
        line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
        line = line.split("//", 1)[0]
        lines.append(line)
    return "\n".join(lines)


def expand_use_groups(code):
    """`use a::{b, c::{d}}` -> the paths a::b, a::c::d (one level of nesting is enough here)."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        stack = [m.group(1).replace("\n", " ")]
        while stack:
            p = stack.pop()
            g = re.match(r"^(.*?)::\{(.*)\}\s*$", p.strip())
            if not g:
                paths.append(p.strip())
                continue
            prefix, inner = g.group(1), g.group(2)
            depth, cur, items = 0, "", []
            for ch in inner:
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    items.append(cur)
                    cur = ""
                else:
                    cur += ch
            items.append(cur)
            for it in items:
                it = it.strip()
                if it and it != "self":
                    stack.append(prefix + "::" + it)
                elif it == "self":
                    paths.append(prefix)
    return paths


def resolve(path, here, mods):
    """The module a path names, from module `here`; None if outside the crate."""
    segs = [s.strip() for s in path.split(" as ")[0].split("::") if s.strip()]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] == "super":
        base, rest = here, segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif segs[0] == "self":
        base, rest = here, segs[1:]
    else:
        return None
    best = base if base in mods else None
    cur = base
    for s in rest:
        cur = cur + (s,)
        if cur in mods:
            best = cur
        else:
            break
    return best


def inline_depths(code):
    """For each offset of `code`, how many inline `mod name { ... }` blocks enclose it (as a sorted list of
    (offset, depth) changes)."""
    changes, stack, depth = [(0, 0)], [], 0
    for m in re.finditer(r"\bmod\s+\w+\s*\{|\{|\}", code):
        tok = m.group(0)
        if tok == "}":
            if stack and stack.pop():
                depth -= 1
                changes.append((m.end(), depth))
        elif tok == "{":
            stack.append(False)
        else:
            stack.append(True)
            depth += 1
            changes.append((m.end(), depth))
    return changes


def depth_at(changes, offset):
    d = 0
    for at, depth in changes:
        if at > offset:
            break
        d = depth
    return d


def edges(src):
    mods = modules(src)
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        code = code_lines(f)
        changes = inline_depths(code)
        found = []  # (path, offset)
        for u in re.finditer(r"\buse\s+[^;]+;", code):
            found += [(p, u.start()) for p in expand_use_groups(u.group(0))]
        body = re.sub(r"\buse\s+[^;]+;", lambda x: " " * len(x.group(0)), code)
        found += [(x.group(1), x.start()) for x in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", body)]
        # A child module named without `self::` (`queue::MAX_CLASSES`).
        found += [
            ("self::" + x.group(1), x.start())
            for x in re.finditer(r"(?<![:\w])(\w+)::", body)
            if m + (x.group(1),) in mods
        ]
        for path, offset in found:
            # Inside an inline module, `super`/`self` start from it: the file's own module, one level down.
            here = m + ("<inline>",) * depth_at(changes, offset)
            t = resolve(path, here, mods)
            if t is not None and t != m:
                graph[m].add(t)
    return mods, graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for src in sys.argv[1:]:
        mods, graph = edges(src)
        for comp in cycles(graph):
            bad = True
            print(f"{src}: import circle among: " + ", ".join(sorted(os.path.relpath(mods[m], src) for m in comp)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
