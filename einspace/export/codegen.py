"""Readable, standalone PyTorch source for a traced network: a ``model.py`` with one ``Model``.

Why not ``GraphModule.code`` or ``GraphModule.to_folder``: they keep the network's nested module
names (``getattr(getattr(self.backbone, "3").inners, "0")``), spell public functions by their
private homes (``torch._C._nn.gelu``), and ``to_folder`` pickles the modules it cannot print.
Here instead:

* every standard ``torch.nn`` module the graph calls becomes one attribute, written as its
  constructor call (from ``extra_repr``, accepted only if rebuilding it gives the same module);
* every other tensor the graph reads (parameters and buffers of einspace modules) becomes a
  parameter or buffer of the same shape, filled from the state_dict this module also returns;
* ``forward`` is the graph, one statement per operation, with infix operators, public names
  (``F.gelu``), and a comment naming the derivation node wherever it changes;
* a repeated branch (one inner module built k times, see :func:`.trace.run_blocks`) is one
  generated ``Block`` class, k copies in an ``nn.ModuleList`` and a loop, instead of k unrolled
  copies of its code.

Whatever cannot be written that way (a call outside torch, a constant with no literal) is an
:class:`ExportError` naming the node.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import io
import keyword
import math
import operator
import re
import tokenize

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F

from .errors import ExportError
from .locate import Place, place_of
from .trace import MODULE_META, run_blocks, trace_block

WIDTH, INDENT = 99, " " * 8  # the line width; the indent of statements in methods
INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/",
         operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.matmul: "@",
         operator.and_: "&", operator.or_: "|", operator.xor: "^", operator.lshift: "<<",
         operator.rshift: ">>", operator.eq: "==", operator.ne: "!=", operator.lt: "<",
         operator.le: "<=", operator.gt: ">", operator.ge: ">="}
PREFIX = {operator.neg: "-", operator.pos: "+", operator.invert: "~"}
NAMESPACES = (("F", F), ("torch", torch), ("torch.linalg", torch.linalg),
              ("torch.fft", torch.fft), ("torch.special", torch.special))
RESERVED = {"self", "torch", "nn", "F", "Path", "Model", "load", "block", "part", *keyword.kwlist,
            *dir(builtins)}
SHORT = {"Linear": "fc", "Conv1d": "conv", "Conv2d": "conv", "BatchNorm1d": "bn",
         "BatchNorm2d": "bn", "LayerNorm": "ln"}  # torch.nn classes -> attribute names


class _Unwritable(Exception):
    """Something in the graph that has no plain-torch spelling (the message says what)."""


class _Names:
    """Unique Python identifiers for the attributes and local variables of the module."""

    def __init__(self, taken):
        self.used = set(RESERVED) | set(taken)

    def new(self, base: str, numbered: bool = False) -> str:
        """``base`` or ``base_1``, ``base_2``, ...; ``numbered``: ``base1``, ``base2``, ..."""
        base = re.sub(r"\W", "_", base).strip("_") or "value"
        if base[0].isdigit():
            base = f"v{base}"
        glue = "_" if not numbered or base[-1].isdigit() else ""
        name, k = (f"{base}{glue}1", 2) if numbered else (base, 1)
        while name in self.used:
            name, k = f"{base}{glue}{k}", k + 1
        self.used.add(name)
        return name


def snake(name: str) -> str:
    """``BatchNorm2d`` -> ``batch_norm2d``, ``LeakyReLU`` -> ``leaky_relu``."""
    for acronym in ("ReLU", "GELU", "SiLU", "GLU"):
        name = name.replace(acronym, acronym.capitalize())
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def public_name(fn) -> str:
    """``F.gelu`` for ``torch._C._nn.gelu``: the function's name in a public torch namespace."""
    name = getattr(fn, "__name__", "")
    if name and not name.startswith("_"):
        for prefix, namespace in NAMESPACES:
            if getattr(namespace, name, None) is fn:
                return f"{prefix}.{name}"
    where = getattr(fn, "__module__", None) or "?"
    raise _Unwritable(f"it calls {where}.{name or fn!r}, which is not a public torch function")


def constructor(module: nn.Module) -> str:
    """``nn.Conv2d(3, 64, kernel_size=(3, 3), padding=(1, 1))``: the module's constructor call
    (its ``extra_repr`` without arguments that equal their defaults), accepted only if it
    rebuilds the same module."""
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        raise _Unwritable(f"it uses {cls.__module__}.{cls.__name__}, which is not a torch.nn "
                          f"class that can be rebuilt from its arguments")
    text = f"nn.{cls.__name__}({module.extra_repr()})"
    for candidate in (_without_defaults(cls, text), text):
        try:
            with torch.device("meta"):  # shapes only: skips the initialisation
                rebuilt = eval(candidate, {"nn": nn, "torch": torch})
        except Exception:
            continue
        if repr(rebuilt) == repr(module) and _layout(rebuilt) == _layout(module):
            return candidate
    raise _Unwritable(f"its {cls.__name__} cannot be rebuilt exactly from {text!r}")


def _without_defaults(cls: type, text: str) -> str:
    try:
        call = ast.parse(text, mode="eval").body
        parameters = inspect.signature(cls).parameters
    except (SyntaxError, ValueError, TypeError):
        return text
    call.keywords = [k for k in call.keywords if not (
        k.arg in parameters and _equals(k.value, parameters[k.arg].default))]
    return ast.unparse(call)


def _equals(node: ast.expr, default) -> bool:
    try:
        return ast.literal_eval(node) == default
    except ValueError:
        return False


def _layout(module: nn.Module) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def literal(value) -> str:
    """Python source for a constant argument of a graph node."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if value is Ellipsis:
        return "..."
    if isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
        return str(value)
    if isinstance(value, torch.device):
        return f"torch.device({str(value)!r})"
    raise _Unwritable(f"it uses the constant {value!r} ({type(value).__name__}), which has no "
                      f"literal form")


def call(target: str, head: str, args: list[str]) -> list[str]:
    """``target = head(args)``, or just the call when ``target`` is empty."""
    lhs = f"{target} = " if target else ""
    return wrap(f"{INDENT}{lhs}{head}({', '.join(args)})")


def wrap(line: str) -> list[str]:
    """``line`` within the line width: the items of its first bracket one per line, each
    wrapped again if still too long (a line without brackets stays as it is)."""
    if len(line) <= WIDTH:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    text = line.strip()
    depth, start, commas = 0, None, []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type != tokenize.OP:
            continue
        column = token.start[1]
        if token.string in "([{":
            depth += 1
            if start is None:
                start = column
        elif token.string in ")]}":
            depth -= 1
            if depth == 0 and start is not None:
                bounds = [start, *commas, column]
                items = [text[a + 1:b].strip()
                         for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
                lines = [f"{indent}{text[:start + 1]}"]
                for item in filter(None, items):
                    lines += wrap(f"{indent}    {item},")
                return lines + [f"{indent}{text[column:]}"]
        elif token.string == "," and depth == 1:
            commas.append(column)
    return [line]


def comment(text: str) -> str:
    """A comment line, shortened in the middle to fit the line width."""
    line = f"{INDENT}# {text}"
    if len(line) <= WIDTH:
        return line
    keep = (WIDTH - len(INDENT) - 5) // 2
    return f"{INDENT}# {text[:keep]}...{text[-keep:]}"


class _Classes:
    """The ``Block`` classes of one ``model.py``: each distinct body once, in definition order."""

    def __init__(self):
        self.sources: dict[str, str] = {}  # class body -> class name
        self.docs: dict[str, str] = {}  # class name -> docstring
        self.uses_f = False

    def name_of(self, body: list[str], doc: str) -> str:
        text = "\n".join(body)
        if text not in self.sources:
            name = f"Block{len(self.sources) + 1}"
            self.sources[text] = name
            self.docs[name] = doc
        return self.sources[text]

    def definitions(self) -> list[str]:
        lines = []
        for text, name in self.sources.items():
            lines += ["", "", f"class {name}(nn.Module):", f'    """{self.docs[name]}"""', text]
        return lines


class _Writer:
    """Writes a module class for one graph of ``root``; ``state`` is the matching state_dict."""

    def __init__(self, root: nn.Module, graph: fx.Graph, places: dict[str, Place],
                 classes: _Classes, default: Place | None = None):
        self.root = root
        self.graph = graph
        self.places = places
        self.classes = classes
        self.default = default  # the node of operations outside every located module
        self.names = _Names(n.name for n in graph.nodes if n.op != "call_module")
        self.init: list[str] = []
        self.modules: dict[str, str] = {}  # qualified name -> attribute
        self.tensors: dict[int, str] = {}  # id(tensor) -> attribute
        self.state: dict[str, Tensor] = {}
        self.values: dict[fx.Node, str] = {}
        self.folded: set[fx.Node] = set()  # nodes written inside another statement
        self.current: Place | None = None  # the node being written

    def place(self, node: fx.Node) -> Place | None:
        return place_of(self.places, node.meta.get(MODULE_META, "")) or self.default

    def module_attribute(self, target: str) -> str:
        if target not in self.modules:
            module = self.root.get_submodule(target)
            text = constructor(module)
            kind = type(module).__name__
            name = self.names.new(SHORT.get(kind) or snake(kind), numbered=True)
            self.init += wrap(f"{INDENT}self.{name} = {text}")
            self.modules[target] = name
            for key, value in module.state_dict().items():
                self.state[f"{name}.{key}"] = value.detach()
        return self.modules[target]

    def tensor_attribute(self, target: str) -> str:
        owner_name, _, attr = target.rpartition(".")
        owner = self.root.get_submodule(owner_name)
        value = getattr(owner, attr)
        if not isinstance(value, Tensor):
            raise _Unwritable(f"it reads {target}, a {type(value).__name__} and not a tensor")
        if id(value) not in self.tensors:
            kind = type(owner).__name__.removesuffix("Module")
            name = self.names.new(f"{snake(kind)}_{attr}" if owner_name else attr)
            shape = ", ".join(map(str, value.shape))
            dtype = "" if value.dtype == torch.float32 else f", dtype={value.dtype}"
            empty = f"torch.empty(({shape}{',' if value.dim() == 1 else ''}){dtype})"
            if isinstance(value, nn.Parameter):
                grad = "" if value.requires_grad else ", requires_grad=False"
                self.init += wrap(f"{INDENT}self.{name} = nn.Parameter({empty}{grad})")
            else:
                self.init += wrap(f'{INDENT}self.register_buffer("{name}", {empty})')
            self.tensors[id(value)] = name
            self.state[name] = value.detach()
        return f"self.{self.tensors[id(value)]}"

    def blocks_attribute(self, target: str) -> str:
        """``self.blocksN = nn.ModuleList(...)`` for the copies in the ModuleList ``target``."""
        copies = self.root.get_submodule(target)
        calls, state = [], {}
        for i, copy in enumerate(copies):
            try:  # a standard layer needs no class of its own
                calls.append(constructor(copy))
                state |= {f"{i}.{key}": value.detach() for key, value in
                          copy.state_dict().items()}
                continue
            except _Unwritable:
                pass
            holder, graph, places = trace_block(self.root, self.places, f"{target}.{i}")
            writer = _Writer(holder, graph, places, self.classes, places.get("block"))
            name = self.classes.name_of(writer.class_body(), _block_doc(places))
            calls.append(f"{name}()")
            state |= {f"{i}.{key}": value for key, value in writer.state.items()}
        attribute = self.names.new("blocks", numbered=True)
        made = f"[{calls[0]} for _ in range({len(calls)})]" if len(set(calls)) == 1 \
            else f"[{', '.join(calls)}]"
        self.init += wrap(f"{INDENT}self.{attribute} = nn.ModuleList({made})")
        self.state |= {f"{attribute}.{key}": value for key, value in state.items()}
        return attribute

    def loop(self, node: fx.Node) -> str:
        """``block(x) for block in self.blocksN`` (one input for every copy), else ``block(part)
        for block, part in zip(self.blocksN, parts)``: the copies applied to their parts."""
        blocks = self.blocks_attribute(node.args[0])
        parts = node.args[1]
        if all(p is parts[0] for p in parts):
            return f"block({self.expr(parts[0])}) for block in self.{blocks}"
        source = self.values[_whole(parts)] if _whole(parts) is not None \
            else self.expr(list(parts))
        return f"block(part) for block, part in zip(self.{blocks}, {source})"

    def fold(self) -> None:
        """Leave out the indexing of a loop's parts and outputs: the loop takes the parts whole
        and its outputs are indexed where they are used (``outs[0] + outs[1]``)."""
        for node in self.graph.nodes:
            if node.target is not run_blocks:
                continue
            source = _whole(node.args[1])
            if source is not None and all(set(p.users) == {node} for p in node.args[1]):
                self.folded |= set(node.args[1])
            self.folded |= {u for u in node.users if u.target is operator.getitem}
            if [u.target for u in node.users] == [builtins.sum]:
                self.folded.add(node)  # written inside the sum as a generator

    def expr(self, value) -> str:
        if isinstance(value, fx.Node):
            return self.values[value]
        if isinstance(value, list) and value and _whole(value) is not None \
                and _whole(value).target is run_blocks:
            return self.values[_whole(value)]
        if isinstance(value, tuple):
            inner = ", ".join(self.expr(v) for v in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if isinstance(value, list):
            return "[" + ", ".join(self.expr(v) for v in value) + "]"
        if isinstance(value, slice):
            return "slice(" + ", ".join(self.expr(v) for v in
                                        (value.start, value.stop, value.step)) + ")"
        if isinstance(value, torch.Size):
            return f"torch.Size({self.expr(list(value))})"
        return literal(value)

    def index(self, value) -> str:
        """An index as written inside brackets: ``:, :-1``, ``..., None``."""
        if isinstance(value, slice):
            parts = ["" if v is None else self.expr(v) for v in
                     (value.start, value.stop, value.step)]
            return ":".join(parts[:2] if value.step is None else parts)
        if isinstance(value, tuple):
            inner = ", ".join(self.index(v) for v in value)
            return f"{inner}," if len(value) == 1 else inner or "()"
        return self.expr(value)

    def statement(self, node: fx.Node, target: str) -> list[str]:
        if node.target is run_blocks:  # its parts may be folded into it: no expressions
            return wrap(f"{INDENT}{target} = [{self.loop(node)}]")
        args = [self.expr(a) for a in node.args]
        kwargs = [f"{k}={self.expr(v)}" for k, v in node.kwargs.items()]
        if node.op == "call_module":
            return call(target, f"self.{self.module_attribute(node.target)}", args + kwargs)
        if node.op == "call_method":
            return call(target, f"{args[0]}.{node.target}", args[1:] + kwargs)
        fn = node.target
        lhs = f"{INDENT}{target} = " if target else INDENT
        if fn in INFIX and len(args) == 2 and not kwargs:
            return wrap(f"{lhs}{args[0]} {INFIX[fn]} {args[1]}")
        if fn in PREFIX and len(args) == 1 and not kwargs:
            return wrap(f"{lhs}{PREFIX[fn]}{args[0]}")
        if fn is operator.getitem and not kwargs:
            return wrap(f"{lhs}{args[0]}[{self.index(node.args[1])}]")
        if fn is builtins.getattr and len(args) == 2 and isinstance(node.args[1], str):
            return wrap(f"{lhs}{args[0]}.{node.args[1]}")
        if fn is builtins.sum:  # a repeated branch's add_tensors: sum(block(x) for ...)
            return wrap(f"{lhs}sum({args[0]})")
        name = public_name(fn)
        self.classes.uses_f |= name.startswith("F.")
        return call(target, name, args + kwargs)

    def forward(self) -> list[str]:
        lines: list[str] = []
        shown: Place | None = None
        self.fold()
        for node in self.graph.nodes:
            self.current = self.place(node)
            try:
                target = node.name if node.name not in RESERVED else self.names.new(node.name)
                if node.op == "placeholder":
                    self.values[node] = target
                    continue
                if node in self.folded:
                    if node.target is run_blocks:
                        self.values[node] = self.loop(node)
                    elif node.args[0].target is run_blocks:
                        index = self.index(node.args[1])
                        self.values[node] = f"{self.values[node.args[0]]}[{index}]"
                    continue
                if node.op == "get_attr":
                    self.values[node] = self.tensor_attribute(node.target)
                    continue
                if node.op == "output":
                    lines += wrap(f"{INDENT}return {self.expr(node.args[0])}")
                    continue
                if self.current is not None and self.current != shown:
                    lines.append(comment(str(self.current)))
                    shown = self.current
                if node.op == "call_module":
                    target = self.module_attribute(node.target)
                self.values[node] = target
                lines += self.statement(node, target if node.users else "")
            except _Unwritable as e:
                raise ExportError(str(e), self.current, "pytorch") from None
        return lines

    def inputs(self) -> list[str]:
        return [self.values[n] for n in self.graph.nodes if n.op == "placeholder"]

    def class_body(self) -> list[str]:
        """``__init__`` and ``forward`` of the class, as indented source lines."""
        body = self.forward()
        value = body[-1].removeprefix(f"{INDENT}return ")
        if len(body) > 1 and body[-2].startswith(f"{INDENT}{value} = "):  # y = f(x); return y
            body[-2:] = [f"{INDENT}return {body[-2].split(' = ', 1)[1]}"]
        params = ", ".join(f"{name}: torch.Tensor" for name in self.inputs())
        return ["    def __init__(self) -> None:", "        super().__init__()", *self.init, "",
                f"    def forward(self, {params}) -> torch.Tensor:", *body]


def _whole(parts) -> fx.Node | None:
    """The node whose items 0, 1, ... ``parts`` are, in order and all of them, if so."""
    if not parts or not all(isinstance(p, fx.Node) and p.target is operator.getitem
                            for p in parts):
        return None
    source = parts[0].args[0]
    if [p.args for p in parts] != [(source, i) for i in range(len(parts))]:
        return None
    items = len(source.args[1]) if source.target is run_blocks else \
        source.args[1] if source.target is torch.chunk and len(source.args) > 1 else None
    return source if items == len(parts) else None


def _block_doc(places: dict[str, Place]) -> str:
    place = places.get("block")
    return f"One copy of the repeated branch {place}." if place else "A repeated branch."


def generate(root: nn.Module, graph: fx.Graph, places: dict[str, Place],
             header: str) -> tuple[str, dict[str, Tensor]]:
    """The source of ``model.py`` (``header`` is its docstring) and the state_dict its ``Model``
    loads."""
    classes = _Classes()
    writer = _Writer(root, graph, places, classes)
    body = writer.class_body()
    doc = header.rstrip().replace("\\", "\\\\").replace('"""', '\\"""')
    lines = [f'"""{doc}\n"""', "", "from pathlib import Path", "", "import torch",
             "from torch import nn"]
    if classes.uses_f:
        lines.append("from torch.nn import functional as F")
    lines += [*classes.definitions(), "", "", "class Model(nn.Module):",
              '    """The exported network (evaluation-mode computation)."""', *body, "", "",
              'def load(weights: str | Path = Path(__file__).with_name("state_dict.pt")) '
              '-> Model:',
              '    """A ``Model`` holding the exported weights, in evaluation mode."""',
              "    model = Model()",
              "    model.load_state_dict(torch.load(weights, map_location=\"cpu\", "
              "weights_only=True))",
              "    return model.eval()", ""]
    return "\n".join(lines), writer.state
