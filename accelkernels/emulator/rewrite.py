"""Source rewriting for the CPU executor: a preprocessed kernel translation unit in, host C++ out.

Three constructs of CUDA C++ have no host meaning; everything else is compiled as written:

* ``asm volatile("tmpl" : outs : ins : clobbers)`` becomes a call of the executor's PTX interpreter,
  ``ak_emu::exec_ptx(program, {operands})``, with each operand bound as its constraint says
  (``"=r"``/``"+f"`` outputs by reference, inputs by value, ``"n"`` immediates), so the template text
  and the operand order of every asm statement are what runs.
* ``kernel<<<grid, block, smem, stream>>>(args)`` becomes ``ak_emu::launch(...)(args)``.
* ``__shared__`` arrays become references into the block's shared-memory arena.

A PTX instruction the executor has no handler for is a :class:`RewriteError` naming it and its source
line, at build time.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# The PTX instructions csrc/emulator/ptx.cpp interprets (its forms() table); a test keeps the two equal.
KNOWN_PTX = frozenset({
    "cp.async.cg.shared.global",
    "cp.async.commit_group",
    "cp.async.wait_group",
    "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
    "stmatrix.sync.aligned.m8n8.x4.shared.b16",
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
    "mbarrier.init.shared::cta.b64",
    "mbarrier.arrive.expect_tx.shared::cta.b64",
    "mbarrier.arrive.shared::cta.b64",
    "mbarrier.try_wait.parity.shared::cta.b64",
    "selp.u32",
    "fence.mbarrier_init.release.cluster",
    "fence.proxy.async.shared::cta",
    "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
    "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster",
    "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes",
    "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group",
    "mapa.shared::cluster.u32",
    "mbarrier.arrive.release.cluster.shared::cluster.b64",
    "barrier.cluster.arrive.release",
    "barrier.cluster.wait.acquire",
    "cp.async.bulk.commit_group",
    "cp.async.bulk.wait_group",
    "cp.async.bulk.wait_group.read",
    "bar.sync",
    "setmaxnreg.inc.sync.aligned.u32",
    "setmaxnreg.dec.sync.aligned.u32",
    "wgmma.fence.sync.aligned",
    "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16",
    "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16",
    "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16",
    "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16",
    "wgmma.commit_group.sync.aligned",
    "wgmma.wait_group.sync.aligned",
})


class RewriteError(RuntimeError):
    """A construct the executor cannot run, with its source location."""


@dataclass
class _Locator:
    """Maps offsets of preprocessed text back to (file, line) through its line markers."""

    text: str

    def __post_init__(self):
        self.marks = [(m.start(), m.group(2), int(m.group(1)))
                      for m in re.finditer(r'^# (\d+) "([^"]*)".*$', self.text, re.M)]

    def at(self, offset: int) -> tuple[str, int]:
        file, line, start = "?", 0, 0
        for pos, f, ln in self.marks:
            if pos > offset:
                break
            file, line, start = f, ln, pos
        # lines after the marker's own line
        return file, line + self.text.count("\n", start, offset) - 1


def _skip_string(text: str, i: int) -> int:
    """Index just past the string or char literal starting at text[i]."""
    quote = text[i]
    i += 1
    while text[i] != quote:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _matching(text: str, i: int, open_c: str = "(", close_c: str = ")") -> int:
    """Index of the bracket closing the one at text[i] (strings skipped)."""
    depth = 0
    while True:
        c = text[i]
        if c in "\"'":
            i = _skip_string(text, i)
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i
        i += 1


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` outside brackets and strings."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            j = _skip_string(text, i)
            cur.append(text[i:j])
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _template(text: str) -> str:
    """The asm template: adjacent string literals joined, escapes decoded."""
    out, i = [], 0
    while i < len(text):
        if text[i] == '"':
            j = _skip_string(text, i)
            out.append(ast.literal_eval(text[i:j]))
            i = j
        elif text[i].isspace():
            i += 1
        else:
            raise RewriteError(f"unexpected text in an asm template: {text[i:i + 40]!r}")
    return "".join(out)


def ptx_instructions(template: str) -> list[str]:
    """The instruction names of a template (declarations and braces dropped)."""
    names = []
    for stmt in template.split(";"):
        stmt = stmt.strip().strip("{}").strip()
        while stmt and stmt[0] in "{}":
            stmt = stmt[1:].strip()
        if not stmt or stmt.startswith(".reg"):
            continue
        names.append(stmt.split()[0])
    return names


_ASM = re.compile(r"\b(?:asm|__asm__)\s*(?:volatile|__volatile__)?\s*\(")


def _rewrite_asm(text: str, loc: _Locator) -> str:
    out, pos = [], 0
    for m in _ASM.finditer(text):
        if m.start() < pos:
            continue
        file, line = loc.at(m.start())
        open_paren = m.end() - 1
        close = _matching(text, open_paren)
        sections = _split_top(text[open_paren + 1:close], ":")
        if len(sections) == 1 and "volatile" not in m.group(0):
            continue  # an asm label of a system header's declaration (`__asm__("symbol")`), not a statement
        # `::` between the template and the inputs is two separators: empty output section.
        template = _template(sections[0])
        for name in ptx_instructions(template):
            if name not in KNOWN_PTX:
                raise RewriteError(f"{file}:{line}: PTX instruction '{name}' has no handler in the CPU executor "
                                   f"(csrc/emulator/ptx.cpp); add one, with a unit test, in the same change.\n"
                                   f"  template: {template.strip()}")
        outs = [o for o in _split_top(sections[1], ",") if o.strip()] if len(sections) > 1 else []
        ins = [o for o in _split_top(sections[2], ",") if o.strip()] if len(sections) > 2 else []
        binds, kinds = [], []
        for operand, is_output in [(o, True) for o in outs] + [(o, False) for o in ins]:
            mm = re.fullmatch(r'\s*"([=+]?)([a-z])"\s*\((.*)\)\s*', operand, re.S)
            if not mm:
                raise RewriteError(f"{file}:{line}: cannot read the asm operand {operand.strip()!r}")
            mod, kind, expr = mm.groups()
            kinds.append(mod + kind)
            if is_output:
                binds.append(f"::ak_emu::bind_out({expr}, '{kind}', {'true' if mod == '+' else 'false'})")
            else:
                binds.append(f"::ak_emu::bind_in({expr}, '{kind}')")
        literal = '"' + template.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
        call = ("{ static const ::ak_emu::PtxProgram& ak_ptx_ = ::ak_emu::compile_ptx("
                + literal + ", \"" + ",".join(kinds) + "\", \"" + file + "\", " + str(line) + "); "
                "::ak_emu::exec_ptx(ak_ptx_, {" + ", ".join(binds) + "}); }")
        out.append(text[pos:m.start()])
        out.append(call)
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def _callee_start(text: str, end: int) -> int:
    """Start of the kernel expression ending at text[end] (exclusive): a name, maybe a template-id."""
    i = end
    while text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":
        depth = 0
        while True:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def _rewrite_launches_ex(text: str) -> str:
    """``cudaLaunchKernelEx(&config, kernel, args...)`` (the kernels write the config's address; the CUDA
    headers' own template of that name takes a pointer parameter, so it is never matched)."""
    pos = 0
    while True:
        start = text.find("cudaLaunchKernelEx(&", pos)
        if start < 0:
            return text
        open_ = start + len("cudaLaunchKernelEx")
        close = _matching(text, open_)
        parts = _split_top(text[open_ + 1:close], ",")
        if len(parts) < 2:
            file, line = _Locator(text).at(start)
            raise RewriteError(f"{file}:{line}: cannot read the cudaLaunchKernelEx call")
        config, kernel, args = parts[0].strip(), parts[1].strip(), ", ".join(p.strip() for p in parts[2:])
        file, line = _Locator(text).at(start)
        call = (f"::ak_emu::launch_ex(\"{kernel}\", __PRETTY_FUNCTION__, \"{file}\", {line}, {config}, {kernel})"
                f"({args})")
        text = text[:start] + call + text[close + 1:]
        pos = start + len(call)


def _rewrite_launches(text: str, loc: _Locator) -> str:
    text = _rewrite_launches_ex(text)
    while True:
        start = text.find("<<<")
        if start < 0:
            return text
        stop = text.find(">>>", start)
        callee0 = _callee_start(text, start)
        callee = text[callee0:start].strip()
        config = text[start + 3:stop]
        j = stop + 3
        while text[j].isspace():
            j += 1
        if text[j] != "(":
            file, line = loc.at(start)
            raise RewriteError(f"{file}:{line}: cannot read the launch of {callee}")
        close = _matching(text, j)
        file, line = _Locator(text).at(start)
        call = (f"::ak_emu::launch(\"{callee}\", __PRETTY_FUNCTION__, \"{file}\", {line}, {callee}, {config})"
                f"{text[j:close + 1]}")
        text = text[:callee0] + call + text[close + 1:]


_SHARED = re.compile(
    r"(extern\s+)?__ak_shared__\s+(?:__ak_align__\((\d+)\)\s+)?([A-Za-z_][\w:\s]*?)\s+(\w+)\s*((?:\[[^\]]*\])*)\s*;")


def _rewrite_shared(text: str) -> str:
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        extern, align, type_, name, dims = m.groups()
        if extern:
            if dims.strip() != "[]":
                raise RewriteError(f"extern __shared__ {name}{dims}: only unsized arrays")
            a = align or f"alignof({type_})"
            return f"{type_}* {name} = static_cast<{type_}*>(::ak_emu::dynamic_shared({a}));"
        count += 1
        site = f"ak_shared_site_{count}_"
        a = align or f"alignof({type_})"
        return (f"static const char {site} = 0; auto& {name} = "
                f"::ak_emu::static_shared_ref<{type_}{dims}>(&{site}, {a}, \"{name}\");")

    text = _SHARED.sub(one, text)
    if "__ak_shared__" in text:
        i = text.index("__ak_shared__")
        raise RewriteError(f"cannot read the __shared__ declaration {text[i:i + 80]!r}")
    return re.sub(r"__ak_align__\((\d+)\)", r"__attribute__((aligned(\1)))", text)


def rewrite(preprocessed: str) -> str:
    """Host C++ for one preprocessed kernel translation unit."""
    loc = _Locator(preprocessed)
    text = _rewrite_asm(preprocessed, loc)  # (asm first: offsets still match the locator)
    loc = _Locator(text)
    text = _rewrite_launches(text, loc)
    return _rewrite_shared(text)
