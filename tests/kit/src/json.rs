//! The one JSON reader of the tests and benches: flowlat's records (a flat
//! object a line, read strictly into a [`Rec`]) and what other programs answer
//! (Prometheus's API, iperf3's report), read into a [`Json`] value; and [`J`],
//! what the benches write their reports in.

use std::collections::HashMap;
use std::fmt::Write as _;

/// A JSON value. A number keeps its text, for the reader to take as the kind
/// of number it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    /// Members in their order; a key given twice is kept twice.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The value of an object's member `key` (its first, if given twice).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The `i`th element of an array.
    pub fn at(&self, i: usize) -> Option<&Json> {
        match self {
            Json::Arr(items) => items.get(i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
}

/// Parses a whole JSON text (white space around it allowed).
pub fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser::new(text.trim());
    let v = p.value()?;
    p.end()?;
    Ok(v)
}

/// A value of a record as flowlat writes them: strings, unsigned integers,
/// booleans, null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Str(String),
    Num(u64),
    Bool(bool),
    /// An array or object, kept as its text (summary histograms).
    Raw(String),
    Null,
}

/// One record: a flat JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec(pub HashMap<String, Val>);

impl Rec {
    pub fn s(&self, k: &str) -> &str {
        match self.0.get(k) {
            Some(Val::Str(s)) => s,
            other => panic!("{k} is not a string: {other:?} in {self:?}"),
        }
    }
    /// A key that may be absent, null, or a string.
    pub fn opt_s(&self, k: &str) -> Option<&str> {
        match self.0.get(k) {
            Some(Val::Str(s)) => Some(s),
            None | Some(Val::Null) => None,
            other => panic!("{k} is not a string or null: {other:?} in {self:?}"),
        }
    }
    pub fn n(&self, k: &str) -> Option<u64> {
        match self.0.get(k) {
            Some(Val::Num(n)) => Some(*n),
            Some(Val::Null) => None,
            other => panic!("{k} is not a number or null: {other:?} in {self:?}"),
        }
    }
}

/// Parses one line of flowlat's JSON output strictly: an object of at least
/// one member, no key twice, every number an unsigned integer.
pub fn record(line: &str) -> Result<Rec, String> {
    let mut p = Parser::new(line.trim());
    let mut map = HashMap::new();
    p.members(|p, k| {
        let start = p.i;
        let v = match p.value()? {
            Json::Str(s) => Val::Str(s),
            Json::Null => Val::Null,
            Json::Bool(b) => Val::Bool(b),
            Json::Num(n) if n.bytes().all(|c| c.is_ascii_digit()) => {
                Val::Num(n.parse().map_err(|_| p.err(start, "bad number"))?)
            }
            Json::Num(_) => return Err(p.err(start, "not an unsigned integer")),
            Json::Arr(_) | Json::Obj(_) => Val::Raw(p.text[start..p.i].to_string()),
        };
        if map.insert(k.clone(), v).is_some() {
            return Err(format!("duplicate key {k} in {line}"));
        }
        Ok(())
    })?;
    p.end()?;
    if map.is_empty() {
        return Err(format!("a record with no members: {line}"));
    }
    Ok(Rec(map))
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn err(&self, at: usize, what: &str) -> String {
        format!("{what} at byte {at} of {}", self.text)
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    /// Takes `c`, or says it expected `what`.
    fn eat(&mut self, c: u8, what: &str) -> Result<(), String> {
        if self.b.get(self.i) != Some(&c) {
            return Err(self.err(self.i, what));
        }
        self.i += 1;
        Ok(())
    }

    /// Nothing but white space is left.
    fn end(&mut self) -> Result<(), String> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.err(self.i, "trailing bytes"))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        let literal = |p: &mut Parser, word: &str, v: Json| {
            if p.b[p.i..].starts_with(word.as_bytes()) {
                p.i += word.len();
                Ok(v)
            } else {
                Err(p.err(p.i, "expected a value"))
            }
        };
        match self.b.get(self.i) {
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'n') => literal(self, "null", Json::Null),
            Some(b't') => literal(self, "true", Json::Bool(true)),
            Some(b'f') => literal(self, "false", Json::Bool(false)),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value()?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(self.err(self.i, "expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                let mut members = Vec::new();
                self.members(|p, k| {
                    members.push((k, p.value()?));
                    Ok(())
                })?;
                Ok(Json::Obj(members))
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number(),
            _ => Err(self.err(self.i, "expected a value")),
        }
    }

    /// An object, handing each member's key to `member` to read its value.
    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, String) -> Result<(), String>,
    ) -> Result<(), String> {
        self.eat(b'{', "expected {")?;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            let k = self.string()?;
            self.ws();
            self.eat(b':', "expected :")?;
            self.ws();
            member(self, k)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err(self.i, "expected , or }")),
            }
        }
    }

    /// A number's text: `-`, digits, a fraction, an exponent.
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        let digits = |p: &mut Parser| {
            let from = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            if p.i == from {
                Err(p.err(p.i, "bad number"))
            } else {
                Ok(())
            }
        };
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        digits(self)?;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            digits(self)?;
        }
        Ok(Json::Num(self.text[start..self.i].to_string()))
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"', "expected a string")?;
        let mut out = String::new();
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = match self.b.get(self.i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(self.err(self.i, "unknown escape")),
                    };
                    out.push(c);
                    self.i += 1;
                }
                _ => {
                    let start = self.i;
                    while self.i < self.b.len() && !matches!(self.b[self.i], b'"' | b'\\') {
                        self.i += 1;
                    }
                    out.push_str(&self.text[start..self.i]);
                }
            }
        }
        Err(self.err(self.i, "unterminated string"))
    }

    /// The character of `\uXXXX` (with `self.i` at the `u`), or of a
    /// surrogate pair `\uD8XX\uDCXX`; leaves `self.i` at its last digit.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let hex = |p: &Parser, at: usize| -> Result<u32, String> {
            p.text
                .get(at..at + 4)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or_else(|| p.err(at, "bad escape"))
        };
        let first = hex(self, self.i + 1)?;
        self.i += 4;
        let code = if (0xd800..0xdc00).contains(&first)
            && self.b.get(self.i + 1..self.i + 3) == Some(b"\\u")
        {
            let second = hex(self, self.i + 3)?;
            if !(0xdc00..0xe000).contains(&second) {
                return Err(self.err(self.i + 3, "bad escape"));
            }
            self.i += 6;
            0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.err(self.i, "bad escape"))
    }
}

/// A value of a bench's report, written as pretty JSON by [`J::write`]
/// (just enough JSON for the reports, no serde for them).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_into_its_members() {
        let r = record(
            r#" {"dir":"out","rtt_ns":1234,"local_ns":null,"other":true,"name":"a\"b\\c\u00e9\n","rtt_hist":[{"lo_ns":1,"count":2}]} "#,
        )
        .expect("a record");
        assert_eq!(r.s("dir"), "out");
        assert_eq!(r.n("rtt_ns"), Some(1234));
        assert_eq!(r.n("local_ns"), None);
        assert_eq!(r.0["other"], Val::Bool(true));
        assert_eq!(r.s("name"), "a\"b\\c\u{e9}\n");
        assert_eq!(
            r.0["rtt_hist"],
            Val::Raw(r#"[{"lo_ns":1,"count":2}]"#.into())
        );
        assert_eq!(
            record(r#"{"n":18446744073709551615}"#).unwrap().n("n"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn a_record_is_read_strictly() {
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"a":1,"a":2}"#,
            r#"{"a":-1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"{"a":"x}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":nul}"#,
            r#"{a:1}"#,
        ] {
            assert!(record(bad).is_err(), "{bad:?} was taken as a record");
        }
    }

    #[test]
    fn values_of_other_programs_read_as_json() {
        // A Prometheus instant query of one series.
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"127.0.0.1:9000","job":"flowlat"},"value":[1715000000.123,"42"]}]}}"#;
        let v = parse(body).expect("JSON");
        let value = v
            .get("data")
            .and_then(|d| d.get("result"))
            .and_then(|r| r.at(0));
        let value = value.and_then(|s| s.get("value")).and_then(|v| v.at(1));
        assert_eq!(value.and_then(Json::as_str), Some("42"));
        // Numbers of every form, empty containers, escapes, a surrogate pair.
        let v = parse(" [ -1.5e+3 , 0 , 2E-2 , {} , [ ] , \"\\ud83d\\ude00\\/\" ] ").expect("JSON");
        assert_eq!(v.at(0).and_then(Json::as_f64), Some(-1500.0));
        assert_eq!(v.at(2).and_then(Json::as_f64), Some(0.02));
        assert_eq!(v.at(3), Some(&Json::Obj(Vec::new())));
        assert_eq!(v.at(4), Some(&Json::Arr(Vec::new())));
        assert_eq!(v.at(5).and_then(Json::as_str), Some("\u{1f600}/"));
        for bad in [
            "",
            "[1,]",
            "{\"a\" 1}",
            "-",
            "1.",
            "1e",
            "[1] [2]",
            "\"\\ud800\\u0041\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was taken as JSON");
        }
    }
}
