//! Just enough JSON to write the report (no serde for one file).

use std::fmt::Write as _;

pub enum J {
    Int(i64),
    Num(f64),
    Bool(bool),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj(fields: Vec<(&str, J)>) -> J {
        J::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn ints<T: Copy + Into<i64>>(v: &[T]) -> J {
        J::Arr(v.iter().map(|&x| J::Int(x.into())).collect())
    }

    pub fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            J::Int(n) => {
                let _ = write!(out, "{n}");
            }
            J::Num(x) if x.is_finite() => {
                let _ = write!(out, "{}", (x * 1000.0).round() / 1000.0);
            }
            J::Num(_) => out.push_str("null"),
            J::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            J::Str(s) => flowlat::sinks::json::json_str(out, s),
            // Arrays of numbers stay on one line: they are the raw runs.
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out, indent);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push_str("{\n");
                for (i, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 2);
                    J::Str(k.clone()).write(out, indent + 2);
                    out.push_str(": ");
                    v.write(out, indent + 2);
                    if i + 1 < fields.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}
