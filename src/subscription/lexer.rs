//! FQL tokenizer, faithful to the reference tokenizer (`@segment/fql-ts`).
//!
//! The reference walks the source one UTF-16 code unit at a time, and several
//! of its oddities depend on that (how far a failed keyword look-ahead reads,
//! length limits), so this lexer works on UTF-16 units too. Positions in
//! tokens and errors are converted back to 0-based `char` indices.
//!
//! Oddities reproduced on purpose:
//! - keywords (`and`, `or`, `null`, `!=`, `<=`, `>=`) count only when followed
//!   by a terminator (whitespace, `,`, `]`, `)` or the end); `<=5` lexes as
//!   `<`, `=`, `5`;
//! - a failed keyword look-ahead that runs into the end of input drops what it
//!   read (`an` at the very end lexes as the identifier `a`);
//! - a closing quote not followed by a terminator is read again as an opening
//!   quote (`"a"b` is an unterminated string);
//! - `!` is an operator only before a letter or `(`; elsewhere it must start `!=`;
//! - identifiers may contain any character escaped with `\`, and must be
//!   followed by a terminator, `.`, `(`, `=` or `!`;
//! - `\r` is not whitespace.

use super::FqlError;

/// Longest identifier, string or number the reference accepts, in UTF-16 units.
const MAX_LEN: usize = 100_000;

/// The kind of a token, named like the reference's token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Ident,
    Dot,
    Operator,
    Conditional,
    Str,
    Number,
    Null,
    BrackLeft,
    BrackRight,
    ParenLeft,
    ParenRight,
    Comma,
    Eos,
}

/// One token: its kind, its text as the reference stores it (strings keep
/// their quotes, the end token's text is `eos`), and its 0-based char position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) value: String,
    pub(crate) pos: usize,
}

impl Token {
    pub(crate) fn new(kind: TokenKind, value: impl Into<String>, pos: usize) -> Self {
        Token {
            kind,
            value: value.into(),
            pos,
        }
    }

    pub(crate) fn eos(pos: usize) -> Self {
        Token::new(TokenKind::Eos, "eos", pos)
    }
}

/// Splits `source` into tokens, ending with an end-of-source token.
pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, FqlError> {
    let mut lexer = Lexer::new(source);
    let result = lexer.run();
    // Positions were recorded as UTF-16 offsets: convert them to char indices.
    let char_indices = lexer.char_indices();
    let to_char = |unit_pos: usize| char_indices.get(unit_pos).copied().unwrap_or(0);
    match result {
        Ok(tokens) => Ok(tokens
            .into_iter()
            .map(|(kind, value, unit_pos)| Token::new(kind, value, to_char(unit_pos)))
            .collect()),
        Err((message, unit_pos)) => Err(FqlError {
            message,
            position: to_char(unit_pos),
        }),
    }
}

const SPACE: u16 = b' ' as u16;
const TAB: u16 = b'\t' as u16;
const NEWLINE: u16 = b'\n' as u16;
const COMMA: u16 = b',' as u16;
const BRACK_LEFT: u16 = b'[' as u16;
const BRACK_RIGHT: u16 = b']' as u16;
const PAREN_LEFT: u16 = b'(' as u16;
const PAREN_RIGHT: u16 = b')' as u16;
const DOT: u16 = b'.' as u16;
const BANG: u16 = b'!' as u16;
const EQUALS: u16 = b'=' as u16;
const LESS: u16 = b'<' as u16;
const GREATER: u16 = b'>' as u16;
const BACKSLASH: u16 = b'\\' as u16;
const UNDERSCORE: u16 = b'_' as u16;
const MINUS: u16 = b'-' as u16;
const PLUS: u16 = b'+' as u16;
const DOUBLE_QUOTE: u16 = b'"' as u16;
const SINGLE_QUOTE: u16 = b'\'' as u16;

fn is_whitespace(unit: u16) -> bool {
    matches!(unit, SPACE | TAB | NEWLINE)
}

fn is_alpha(unit: u16) -> bool {
    u8::try_from(unit).is_ok_and(|b| b.is_ascii_alphabetic())
}

fn is_digit(unit: u16) -> bool {
    u8::try_from(unit).is_ok_and(|b| b.is_ascii_digit())
}

/// `None` stands for the end of the source.
fn is_terminator(unit: Option<u16>) -> bool {
    match unit {
        None => true,
        Some(u) => is_whitespace(u) || matches!(u, COMMA | BRACK_RIGHT | PAREN_RIGHT),
    }
}

fn is_ident_unit(unit: Option<u16>) -> bool {
    match unit {
        None => false,
        Some(u) => is_alpha(u) || is_digit(u) || matches!(u, UNDERSCORE | MINUS | BACKSLASH),
    }
}

type RawToken = (TokenKind, String, usize);
type LexError = (String, usize);

struct Lexer {
    units: Vec<u16>,
    pos: usize,
}

impl Lexer {
    fn new(source: &str) -> Self {
        Lexer {
            units: source.encode_utf16().collect(),
            pos: 0,
        }
    }

    /// The char index of every UTF-16 offset, end included (low surrogates
    /// do not start a char).
    fn char_indices(&self) -> Vec<usize> {
        let mut indices = Vec::with_capacity(self.units.len() + 1);
        let mut chars = 0;
        for unit in &self.units {
            indices.push(chars);
            if !(0xDC00..=0xDFFF).contains(unit) {
                chars += 1;
            }
        }
        indices.push(chars);
        indices
    }

    /// The character starting at a UTF-16 offset, for error messages.
    fn describe_at(&self, unit_pos: usize) -> String {
        let rest = self.units.get(unit_pos..).unwrap_or_default();
        match char::decode_utf16(rest.iter().copied()).next() {
            None => "end of input".to_string(),
            Some(Ok(c)) => format!("{c:?}"),
            Some(Err(_)) => "a lone surrogate".to_string(),
        }
    }

    fn next(&mut self) -> Option<u16> {
        let unit = self.units.get(self.pos).copied();
        if unit.is_some() {
            self.pos += 1;
        }
        unit
    }

    fn peek(&self) -> Option<u16> {
        self.units.get(self.pos).copied()
    }

    fn backup(&mut self, count: usize) {
        self.pos = self.pos.saturating_sub(count);
    }

    /// The reference's look-ahead: reads `expected.len()` units (stopping
    /// early after a terminator); succeeds when they equal `expected` and a
    /// terminator follows. On failure it steps back, except when it ran into
    /// the end of the source, where what it read stays consumed.
    fn accept(&mut self, expected: &str) -> bool {
        let expected: Vec<u16> = expected.encode_utf16().collect();
        let mut read: Vec<u16> = Vec::with_capacity(expected.len());
        for _ in 0..expected.len() {
            match self.next() {
                None => return false,
                Some(unit) => {
                    read.push(unit);
                    if is_terminator(Some(unit)) {
                        break;
                    }
                }
            }
        }
        if read == expected && is_terminator(self.peek()) {
            return true;
        }
        self.backup(read.len());
        false
    }

    fn run(&mut self) -> Result<Vec<RawToken>, LexError> {
        let mut tokens = Vec::new();
        loop {
            let start = self.pos;
            let Some(unit) = self.next() else {
                tokens.push((TokenKind::Eos, "eos".to_string(), start));
                return Ok(tokens);
            };
            if is_whitespace(unit) {
                continue;
            }
            if unit == BANG {
                let following = self.peek();
                if following.is_some_and(|u| is_alpha(u) || u == PAREN_LEFT) {
                    tokens.push((TokenKind::Operator, "!".to_string(), start));
                    continue;
                }
            }
            let token = if is_alpha(unit) || matches!(unit, BANG | EQUALS | GREATER | LESS | BACKSLASH | UNDERSCORE) {
                self.operator_or_conditional(unit, start)?
            } else if is_digit(unit) || unit == MINUS || unit == PLUS {
                self.number(unit, start)?
            } else if unit == DOUBLE_QUOTE || unit == SINGLE_QUOTE {
                self.string(unit, start)?
            } else {
                let kind = match unit {
                    DOT => TokenKind::Dot,
                    BRACK_LEFT => TokenKind::BrackLeft,
                    BRACK_RIGHT => TokenKind::BrackRight,
                    COMMA => TokenKind::Comma,
                    PAREN_LEFT => TokenKind::ParenLeft,
                    PAREN_RIGHT => TokenKind::ParenRight,
                    _ => return Err((format!("invalid character {}", self.describe_at(start)), start)),
                };
                (kind, String::from_utf16_lossy(&[unit]), start)
            };
            tokens.push(token);
        }
    }

    fn string(&mut self, quote: u16, start: usize) -> Result<RawToken, LexError> {
        let mut content: Vec<u16> = Vec::new();
        while self.peek() != Some(quote) {
            match self.next() {
                None => return Err(("unterminated string".to_string(), start)),
                Some(unit) => content.push(unit),
            }
            if content.len() >= MAX_LEN {
                return Err(("string is too long".to_string(), start));
            }
        }
        // The reference ignores whether this succeeds: a closing quote that is
        // not followed by a terminator is left to be read again.
        let quote_str = String::from_utf16_lossy(&[quote]);
        self.accept(&quote_str);
        let mut text = quote_str.clone();
        text.push_str(&String::from_utf16_lossy(&content));
        text.push_str(&quote_str);
        Ok((TokenKind::Str, text, start))
    }

    fn number(&mut self, first: u16, start: usize) -> Result<RawToken, LexError> {
        let mut text: Vec<u16> = vec![first];
        let mut coming = self.peek();
        let mut seen_point = false;
        while let Some(unit) = coming.filter(|u| is_digit(*u) || *u == DOT) {
            let at = self.pos;
            self.next();
            text.push(unit);
            if unit == DOT {
                if is_terminator(self.peek()) {
                    return Err(("unexpected terminator after decimal point".to_string(), at));
                }
                if seen_point {
                    return Err(("multiple decimal points in one number".to_string(), at));
                }
                seen_point = true;
            }
            if text.len() > MAX_LEN {
                return Err(("number is too long".to_string(), start));
            }
            coming = self.peek();
        }
        Ok((TokenKind::Number, String::from_utf16_lossy(&text), start))
    }

    fn operator_or_conditional(&mut self, first: u16, start: usize) -> Result<RawToken, LexError> {
        let op = |text: &str| Ok((TokenKind::Operator, text.to_string(), start));
        match first {
            EQUALS => op("="),
            BANG => {
                if self.accept("=") {
                    op("!=")
                } else if self.peek() == Some(EQUALS) {
                    Err((
                        "`!=` must be followed by a space, ',', ']', ')' or the end".to_string(),
                        start,
                    ))
                } else {
                    Err((
                        format!("expected '=' after '!', got {}", self.describe_at(self.pos)),
                        start,
                    ))
                }
            }
            LESS | GREATER => {
                let base = if first == LESS { "<" } else { ">" };
                if self.accept("=") {
                    op(&format!("{base}="))
                } else {
                    op(base)
                }
            }
            _ if first == u16::from(b'a') && self.accept("nd") => {
                Ok((TokenKind::Conditional, "and".to_string(), start))
            }
            _ if first == u16::from(b'o') && self.accept("r") => Ok((TokenKind::Conditional, "or".to_string(), start)),
            _ if first == u16::from(b'n') && self.accept("ull") => Ok((TokenKind::Null, "null".to_string(), start)),
            _ => self.ident(first, start),
        }
    }

    fn ident(&mut self, first: u16, start: usize) -> Result<RawToken, LexError> {
        let mut text: Vec<u16> = Vec::new();
        let mut unit = first;
        loop {
            if unit == BACKSLASH {
                let escape_at = self.pos.saturating_sub(1);
                match self.next() {
                    None => {
                        return Err((
                            "expected a character after the escape character '\\'".to_string(),
                            escape_at,
                        ))
                    }
                    Some(escaped) => unit = escaped,
                }
            }
            text.push(unit);
            if text.len() >= MAX_LEN {
                return Err(("identifier is too long".to_string(), start));
            }
            if !is_ident_unit(self.peek()) {
                break;
            }
            match self.next() {
                Some(next) => unit = next,
                None => break,
            }
        }
        let coming = self.peek();
        let ends_well = is_terminator(coming) || coming.is_some_and(|u| matches!(u, DOT | PAREN_LEFT | EQUALS | BANG));
        if !ends_well {
            return Err((
                format!(
                    "expected a space, '.', '(', '=', '!', ',', ']' or ')' after identifier, got {}",
                    self.describe_at(self.pos)
                ),
                self.pos,
            ));
        }
        Ok((TokenKind::Ident, String::from_utf16_lossy(&text), start))
    }
}
