//! A small JSON scanner for the one document the sync path reads on every invocation: the Lambda
//! DynamoDB stream event. It reads the few strings decisions need ([`Scanner::string`]) and
//! validates and skips everything else ([`Scanner::skip`]) without building values.
//!
//! Why not serde_json: through serde's visitors, decoding an event cost 1.8× serde_json's own bare
//! parse of the same text, most of it in the visitor machinery around each of the ~100 tokens of a
//! record (BENCHMARKS.md, "Handler CPU"). Scanning directly costs 1.5× that bare parse: a fifth
//! less per record.
//!
//! It accepts exactly RFC 8259 JSON, as serde_json does: the same escapes, number grammar, no
//! control characters in strings, no trailing commas; strings read with [`Scanner::string`] must not
//! hold a lone UTF-16 surrogate (skipped ones only need well-formed escapes, as in serde_json), and
//! skipped values nest at most [`MAX_DEPTH`] levels deep. Property tests check it against
//! serde_json on mutated events (`decide::tests`) and on arbitrary text (`scan::tests`).

use std::borrow::Cow;

/// How deep a skipped value may nest: deeper input is an error, never a stack overflow.
pub const MAX_DEPTH: usize = 128;

/// A JSON syntax error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct SyntaxError {
    pub reason: &'static str,
    pub offset: usize,
}

impl SyntaxError {
    pub fn new(reason: &'static str, offset: usize) -> Self {
        Self { reason, offset }
    }
}

/// The type of the value at the scanner's position, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    /// "an object", "a string", …: for messages about a value of the wrong type.
    pub fn described(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// A cursor over a JSON text.
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

type Result<T> = std::result::Result<T, SyntaxError>;

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[cold]
    fn error<T>(&self, reason: &'static str) -> Result<T> {
        Err(SyntaxError::new(reason, self.pos))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8, reason: &'static str) -> Result<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(reason)
        }
    }

    /// The type of the next value, not consumed.
    pub fn kind(&mut self) -> Result<Kind> {
        Ok(match self.peek() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b'-' | b'0'..=b'9') => Kind::Number,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            Some(_) => return self.error("expected a value"),
            None => return self.error("unexpected end of input"),
        })
    }

    /// After the whole document: only whitespace may follow.
    pub fn finish(&mut self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.error("trailing characters"),
        }
    }

    /// Enters the object at the position (which must be one).
    pub fn object(&mut self) -> Result<Members> {
        self.expect(b'{', "expected an object")?;
        Ok(Members { first: true })
    }

    /// Enters the array at the position (which must be one).
    pub fn array(&mut self) -> Result<Elements> {
        self.expect(b'[', "expected an array")?;
        Ok(Elements { first: true })
    }

    /// Moves to the first byte after the run of plain string bytes at the position: the closing
    /// quote, a backslash, a control character or the end. Eight bytes at a time (SWAR): a byte
    /// is plain unless it is `"`, `\` or below 0x20, and strings in events are mostly plain.
    fn skip_plain(&mut self) {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let bytes = self.bytes();
        while let Some(chunk) = bytes.get(self.pos..self.pos + 8) {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
            // A high bit per special byte; bits above the first may be false, below never are.
            let special = zero(v ^ (LO * b'"' as u64))
                | zero(v ^ (LO * b'\\' as u64))
                | (v.wrapping_sub(LO * 0x20) & !v & HI);
            if special != 0 {
                self.pos += (special.trailing_zeros() / 8) as usize;
                return;
            }
            self.pos += 8;
        }
        while let Some(&b) = bytes.get(self.pos) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    /// Reads the string at the position. It borrows from the text unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        match self.peek() {
            Some(b'"') => self.string_at_quote(),
            _ => self.error("expected a string"),
        }
    }

    /// [`Scanner::string`], with the position known to be at the opening quote.
    fn string_at_quote(&mut self) -> Result<Cow<'a, str>> {
        self.pos += 1;
        let start = self.pos;
        self.skip_plain();
        if self.bytes().get(self.pos) == Some(&b'"') {
            self.pos += 1;
            return Ok(Cow::Borrowed(&self.text[start..self.pos - 1]));
        }
        let mut owned = String::from(&self.text[start..self.pos]);
        loop {
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    owned.push(self.escape()?);
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
            let run = self.pos;
            self.skip_plain();
            owned.push_str(&self.text[run..self.pos]);
        }
    }

    /// Skips the string at the position, checking its escapes' syntax (as serde_json does for
    /// strings it ignores).
    fn skip_string(&mut self) -> Result<()> {
        self.pos += 1; // the opening quote, checked by the caller
        loop {
            self.skip_plain();
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.bytes().get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            self.hex4()?;
                        }
                        _ => return self.error("invalid escape"),
                    }
                }
                Some(_) => return self.error("control character in a string"),
                None => return self.error("unterminated string"),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16> {
        let digits = self.bytes().get(self.pos..self.pos + 4);
        let text = digits.and_then(|d| std::str::from_utf8(d).ok());
        match text.filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit())) {
            Some(t) => {
                self.pos += 4;
                Ok(u16::from_str_radix(t, 16).expect("four hex digits"))
            }
            None => self.error("invalid \\u escape"),
        }
    }

    /// One escape, after its backslash.
    fn escape(&mut self) -> Result<char> {
        let Some(&b) = self.bytes().get(self.pos) else {
            return self.error("unterminated string");
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes().get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return self.error("lone leading surrogate in a \\u escape");
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return self.error("lone leading surrogate in a \\u escape");
                        }
                        0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return self.error("lone trailing surrogate in a \\u escape")
                    }
                    other => u32::from(other),
                };
                char::from_u32(code).expect("a scalar value")
            }
            _ => {
                self.pos -= 1;
                return self.error("invalid escape");
            }
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn skip_number(&mut self) -> Result<()> {
        if self.bytes().get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes().get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.error("invalid number"),
        }
        if self.bytes().get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.error("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.bytes().get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes().get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.error("invalid number");
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.error("expected a value")
        }
    }

    /// Validates and skips the value at the position.
    pub fn skip(&mut self) -> Result<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Result<()> {
        match self.kind()? {
            Kind::String => self.skip_string(),
            Kind::Number => self.skip_number(),
            Kind::Null => self.literal(b"null"),
            Kind::Bool if self.bytes()[self.pos] == b't' => self.literal(b"true"),
            Kind::Bool => self.literal(b"false"),
            Kind::Object | Kind::Array if depth >= MAX_DEPTH => {
                self.error("recursion limit exceeded")
            }
            Kind::Object => {
                let mut members = self.object()?;
                while members.next_raw(self)? {
                    self.skip_nested(depth + 1)?;
                }
                Ok(())
            }
            Kind::Array => {
                let mut elements = self.array()?;
                while elements.next(self)? {
                    self.skip_nested(depth + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// The members of an object being read: after each key, read or skip its value.
pub struct Members {
    first: bool,
}

impl Members {
    /// Moves past `,` (or the opening brace) to the next key's opening quote (`true`), or past the
    /// closing brace (`false`).
    fn advance(&mut self, s: &mut Scanner<'_>) -> Result<bool> {
        let first = std::mem::replace(&mut self.first, false);
        match s.peek() {
            Some(b'}') => {
                s.pos += 1;
                Ok(false)
            }
            Some(b'"') if first => Ok(true),
            Some(b',') if !first => {
                s.pos += 1;
                match s.peek() {
                    Some(b'"') => Ok(true),
                    _ => s.error("expected a key"),
                }
            }
            _ if first => s.error("expected a key or `}`"),
            _ => s.error("expected `,` or `}`"),
        }
    }

    fn colon(s: &mut Scanner<'_>) -> Result<()> {
        s.expect(b':', "expected `:`")
    }

    /// The next key, or `None` at the end of the object.
    pub fn next<'a>(&mut self, s: &mut Scanner<'a>) -> Result<Option<Cow<'a, str>>> {
        if !self.advance(s)? {
            return Ok(None);
        }
        let key = s.string_at_quote()?;
        Self::colon(s)?;
        Ok(Some(key))
    }

    /// Like [`Members::next`], for a key nobody reads.
    fn next_raw(&mut self, s: &mut Scanner<'_>) -> Result<bool> {
        if !self.advance(s)? {
            return Ok(false);
        }
        s.skip_string()?;
        Self::colon(s)?;
        Ok(true)
    }
}

/// The elements of an array being read: after each `true`, read or skip the element.
pub struct Elements {
    first: bool,
}

impl Elements {
    /// Whether another element follows (the position is then at it).
    pub fn next(&mut self, s: &mut Scanner<'_>) -> Result<bool> {
        let first = std::mem::replace(&mut self.first, false);
        match s.peek() {
            Some(b']') => {
                s.pos += 1;
                Ok(false)
            }
            Some(b',') if !first => {
                s.pos += 1;
                match s.peek() {
                    Some(b']') => s.error("trailing comma"),
                    _ => Ok(true),
                }
            }
            Some(_) if first => Ok(true),
            _ => s.error("expected `,` or `]`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn skips(text: &str) -> Result<()> {
        let mut s = Scanner::new(text);
        s.skip()?;
        s.finish()
    }

    #[test]
    fn strings_unescape_and_borrow_when_plain() {
        let mut s = Scanner::new(r#""plain text, longer than eight bytes""#);
        assert!(matches!(
            s.string(),
            Ok(Cow::Borrowed("plain text, longer than eight bytes"))
        ));
        let mut s = Scanner::new(r#""a\"b\\c\/d\n\u0074ier\ud83d\ude00 é""#);
        assert_eq!(s.string().unwrap(), "a\"b\\c/d\ntier😀 é");
        for bad in [
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\x""#,
            "\"a\tb\"",
            "\"0123456789\u{1f}abcdef\"",
            r#""abc"#,
            r#""\u12"#,
        ] {
            assert!(Scanner::new(bad).string().is_err(), "{bad}");
        }
    }

    #[test]
    fn skipping_accepts_json_and_rejects_what_serde_json_rejects() {
        for good in [
            r#"{"a":[1,-2.5e+3,0,true,false,null,{"b":"\u00e9\ud800"}]}"#,
            " [ ] ",
            "{}",
            "-0.0E1",
        ] {
            assert_eq!(skips(good), Ok(()), "{good}");
        }
        for bad in [
            "[1,]",
            "{\"a\":1,}",
            "{,}",
            "[,1]",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "",
            "\"x\" y",
            "[\"\u{1}\"]",
            "[\"0123456789\nabcdefghij\"]",
        ] {
            assert!(skips(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(skips(&deep).unwrap_err().reason, "recursion limit exceeded");
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(skips(&ok), Ok(()));
    }

    proptest! {
        /// Any text is valid JSON for the scanner exactly when it is for serde_json.
        #[test]
        fn the_scanner_accepts_what_serde_json_accepts(text in r#"[\[\]{}",:0-9.eE+\-a-z\\ ]{0,24}"#) {
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            prop_assert_eq!(skips(&text).is_ok(), theirs, "{:?}", text);
        }

        /// Any string value reads back as serde_json reads it.
        #[test]
        fn strings_read_as_serde_json_reads_them(value in any::<String>(), escape_all in any::<bool>()) {
            let text = if escape_all {
                let mut t = String::from('"');
                for u in value.encode_utf16() { t.push_str(&format!("\\u{u:04x}")); }
                t + "\""
            } else {
                serde_json::to_string(&value).unwrap()
            };
            prop_assert_eq!(Scanner::new(&text).string().unwrap(), value);
        }
    }
}
