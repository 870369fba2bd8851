"""``FileDescriptorProto`` → ``.proto`` text.

The text is rendered from the very descriptor the runtime serves, and the codegen tests compile
it back with protoc and compare, so the committed ``.proto`` and the served descriptors agree.
``buf.validate`` rules are written as one aggregate option per field.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, text_format

from runtime.gtype import rules_of

__all__ = ["render_proto"]

FDP = descriptor_pb2.FieldDescriptorProto

_SCALAR_NAMES = {
    FDP.TYPE_STRING: "string",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_BYTES: "bytes",
}


def _default_json_name(name: str) -> str:
    """protoc's default JSON name: lowerCamelCase of the field name."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _text(rules: object) -> str:
    """A rules message as one line of protobuf text: ``required: true string { max_len: 200 }``."""
    return str(text_format.MessageToString(rules, as_one_line=True, as_utf8=True))  # type: ignore[arg-type]


class _Renderer:
    def __init__(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        self.fdp = fdp
        self.prefix = f".{fdp.package}."
        self.lines: list[str] = []

    def type_ref(self, fd: descriptor_pb2.FieldDescriptorProto) -> str:
        if fd.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            name = fd.type_name
            return name[len(self.prefix) :] if name.startswith(self.prefix) else name.lstrip(".")
        return _SCALAR_NAMES[fd.type]

    def options(self, fd: descriptor_pb2.FieldDescriptorProto) -> str:
        found = []
        if fd.json_name and fd.json_name != _default_json_name(fd.name):
            found.append(f'json_name = "{fd.json_name}"')
        rules = rules_of(fd.options)
        if rules is not None:
            found.append(f"(buf.validate.field) = {{{_text(rules)}}}")
        return f" [{', '.join(found)}]" if found else ""

    def render(self, header: str) -> str:
        out = self.lines
        out.append(f"// {header}")
        out.append('syntax = "proto3";')
        out.append("")
        out.append(f"package {self.fdp.package};")
        if self.fdp.dependency:
            out.append("")
            out.extend(f'import "{dep}";' for dep in self.fdp.dependency)
        for service in self.fdp.service:
            out.append("")
            out.append(f"service {service.name} {{")
            for m in service.method:
                takes = "stream " if m.client_streaming else ""
                gives = "stream " if m.server_streaming else ""
                out.append(
                    f"  rpc {m.name}({takes}{m.input_type[len(self.prefix):]}) "
                    f"returns ({gives}{m.output_type[len(self.prefix):]});"
                )
            out.append("}")
        for msg in self.fdp.message_type:
            out.append("")
            self.message(msg)
        for enum in self.fdp.enum_type:
            out.append("")
            out.append(f"enum {enum.name} {{")
            if enum.reserved_range:
                out.append(f"  reserved {', '.join(str(r.start) for r in enum.reserved_range)};")
                out.append("  reserved " + ", ".join(f'"{n}"' for n in enum.reserved_name) + ";")
            out.extend(f"  {v.name} = {v.number};" for v in enum.value)
            out.append("}")
        return "\n".join(out) + "\n"

    def message(self, msg: descriptor_pb2.DescriptorProto) -> None:
        out = self.lines
        out.append(f"message {msg.name} {{")
        if msg.reserved_range:
            numbers = ", ".join(str(r.start) for r in msg.reserved_range)
            out.append(f"  reserved {numbers};")
            names = ", ".join(f'"{n}"' for n in msg.reserved_name)
            out.append(f"  reserved {names};")
        entries = {f"{self.prefix}{msg.name}.{n.name}": n for n in msg.nested_type if n.options.map_entry}
        open_oneof: int | None = None
        for fd in msg.field:
            real_oneof = fd.HasField("oneof_index") and not fd.proto3_optional
            if open_oneof is not None and (not real_oneof or fd.oneof_index != open_oneof):
                out.append("  }")
                open_oneof = None
            if real_oneof and open_oneof is None:
                open_oneof = fd.oneof_index
                decl = msg.oneof_decl[fd.oneof_index]
                out.append(f"  oneof {decl.name} {{")
                rules = rules_of(decl.options)
                if rules is not None:
                    out.append(f"    option (buf.validate.oneof) = {{{_text(rules)}}};")
            indent = "    " if open_oneof is not None else "  "
            if fd.type_name in entries:
                key, value = entries[fd.type_name].field
                kind = f"map<{self.type_ref(key)}, {self.type_ref(value)}>"
            elif fd.label == FDP.LABEL_REPEATED:
                kind = f"repeated {self.type_ref(fd)}"
            elif fd.proto3_optional:
                kind = f"optional {self.type_ref(fd)}"
            else:
                kind = self.type_ref(fd)
            out.append(f"{indent}{kind} {fd.name} = {fd.number}{self.options(fd)};")
        if open_oneof is not None:
            out.append("  }")
        out.append("}")


def render_proto(fdp: descriptor_pb2.FileDescriptorProto, *, header: str) -> str:
    """The ``.proto`` source of ``fdp``; ``header`` becomes its first comment line."""
    return _Renderer(fdp).render(header)
