//! V8's date parser (`new Date(string)`), zone fixed at UTC: a port that
//! follows the structure of V8's `DateParser` (tokenizer, then the day, time
//! and zone composers), whose quirks are the behaviour (see [`super`]).

use super::{make_day, make_time, time_clip, MAX_TIME_BEFORE_UTC_MS, MAX_TIME_MS, MS_PER_DAY};

/// V8's "no value" marker (`kMaxInt`).
const NONE: i32 = i32::MAX;
/// V8 keeps only this many leading digits of a numeral.
const MAX_SIGNIFICANT_DIGITS: usize = 9;
/// Largest Smi on 64-bit V8 without pointer compression (Node.js).
const SMI_MAX: u32 = i32::MAX as u32;

fn between(x: i32, lo: i32, hi: i32) -> bool {
    lo <= x && x <= hi
}
fn is_month(x: i32) -> bool {
    between(x, 1, 12)
}
fn is_day(x: i32) -> bool {
    between(x, 1, 31)
}
fn is_hour(x: i32) -> bool {
    between(x, 0, 23)
}
fn is_minute(x: i32) -> bool {
    between(x, 0, 59)
}
fn is_second(x: i32) -> bool {
    between(x, 0, 59)
}
fn is_hour12(x: i32) -> bool {
    between(x, 0, 12)
}
fn is_millisecond(x: i32) -> bool {
    between(x, 0, 999)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeywordKind {
    Invalid,
    MonthName,
    TimeZoneName,
    TimeSeparator,
    AmPm,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    Invalid,
    Unknown,
    Number { value: i32, len: usize },
    Symbol(u8),
    WhiteSpace,
    EndOfInput,
    Keyword { kind: KeywordKind, value: i32, len: usize },
}

impl Token {
    fn is_number(self) -> bool {
        matches!(self, Token::Number { .. })
    }
    fn is_fixed_length_number(self, length: usize) -> bool {
        matches!(self, Token::Number { len, .. } if len == length)
    }
    /// The numeral's value (0 for other tokens; callers check first).
    fn number(self) -> i32 {
        match self {
            Token::Number { value, .. } => value,
            _ => 0,
        }
    }
    fn is_symbol(self, c: u8) -> bool {
        self == Token::Symbol(c)
    }
    fn ascii_sign(self) -> Option<i32> {
        match self {
            Token::Symbol(b'+') => Some(1),
            Token::Symbol(b'-') => Some(-1),
            _ => None,
        }
    }
    fn is_keyword_kind(self, wanted: KeywordKind) -> bool {
        matches!(self, Token::Keyword { kind, .. } if kind == wanted)
    }
    fn is_keyword_z(self) -> bool {
        self == Token::Keyword {
            kind: KeywordKind::TimeZoneName,
            value: 0,
            len: 1,
        }
    }
}

/// (three-letter lower-case prefix, kind, value), in V8's lookup order.
const KEYWORDS: [([u32; 3], KeywordKind, i32); 27] = {
    use KeywordKind::*;
    const fn w(s: &[u8; 3]) -> [u32; 3] {
        [s[0] as u32, s[1] as u32, s[2] as u32]
    }
    [
        (w(b"jan"), MonthName, 1),
        (w(b"feb"), MonthName, 2),
        (w(b"mar"), MonthName, 3),
        (w(b"apr"), MonthName, 4),
        (w(b"may"), MonthName, 5),
        (w(b"jun"), MonthName, 6),
        (w(b"jul"), MonthName, 7),
        (w(b"aug"), MonthName, 8),
        (w(b"sep"), MonthName, 9),
        (w(b"oct"), MonthName, 10),
        (w(b"nov"), MonthName, 11),
        (w(b"dec"), MonthName, 12),
        (w(b"am\0"), AmPm, 0),
        (w(b"pm\0"), AmPm, 12),
        (w(b"ut\0"), TimeZoneName, 0),
        (w(b"utc"), TimeZoneName, 0),
        (w(b"z\0\0"), TimeZoneName, 0),
        (w(b"gmt"), TimeZoneName, 0),
        (w(b"cdt"), TimeZoneName, -5),
        (w(b"cst"), TimeZoneName, -6),
        (w(b"edt"), TimeZoneName, -4),
        (w(b"est"), TimeZoneName, -5),
        (w(b"mdt"), TimeZoneName, -6),
        (w(b"mst"), TimeZoneName, -7),
        (w(b"pdt"), TimeZoneName, -7),
        (w(b"pst"), TimeZoneName, -8),
        (w(b"t\0\0"), TimeSeparator, 0),
    ]
};

/// A word: only month names may be longer than their three-letter prefix.
fn lookup_keyword(prefix: [u32; 3], len: usize) -> (KeywordKind, i32) {
    KEYWORDS
        .iter()
        .find(|(key, kind, _)| *key == prefix && (len <= 3 || *kind == KeywordKind::MonthName))
        .map_or((KeywordKind::Invalid, 0), |&(_, kind, value)| (kind, value))
}

/// JavaScript WhiteSpace (a UTF-16 code unit), line terminators excluded.
fn is_js_white_space(c: u32) -> bool {
    matches!(
        c,
        0x09 | 0x0B | 0x0C | 0x20 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 | 0xFEFF
    )
}

/// JavaScript WhiteSpace or LineTerminator (a UTF-16 code unit).
fn is_js_white_space_or_line_terminator(c: u32) -> bool {
    is_js_white_space(c) || matches!(c, 0x0A | 0x0D | 0x2028 | 0x2029)
}

/// Character source over UTF-16 code units; `ch == 0` means end (as in V8, a NUL
/// code unit also ends the input).
struct Reader<'a> {
    buf: &'a [u16],
    index: usize,
    ch: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u16]) -> Self {
        let mut reader = Reader { buf, index: 0, ch: 0 };
        reader.advance();
        reader
    }
    fn advance(&mut self) {
        self.ch = self.buf.get(self.index).map_or(0, |&c| u32::from(c));
        self.index += 1;
    }
    fn is_digit(&self) -> bool {
        (u32::from(b'0')..=u32::from(b'9')).contains(&self.ch)
    }
    /// A word is a run of code units from `A` upwards that are not white space
    /// (line terminators such as U+2028 do belong to words).
    fn is_word_char(&self) -> bool {
        self.ch >= u32::from(b'A') && !is_js_white_space(self.ch)
    }
    fn skip(&mut self, c: u8) -> bool {
        if self.ch == u32::from(c) {
            self.advance();
            return true;
        }
        false
    }
    fn read_numeral(&mut self) -> i32 {
        // Leading zeros are skipped before the nine significant digits are counted.
        while self.ch == u32::from(b'0') {
            self.advance();
        }
        let mut n: i32 = 0;
        let mut i = 0;
        while self.is_digit() {
            if i < MAX_SIGNIFICANT_DIGITS {
                // At most nine digits: fits in i32.
                n = n * 10 + (self.ch - u32::from(b'0')) as i32;
            }
            i += 1;
            self.advance();
        }
        n
    }
    fn read_word(&mut self) -> ([u32; 3], usize) {
        let mut prefix = [0u32; 3];
        let mut len = 0;
        while self.is_word_char() {
            if let Some(slot) = prefix.get_mut(len) {
                *slot = self.ch | 0x20;
            }
            len += 1;
            self.advance();
        }
        (prefix, len)
    }
    fn skip_white_space(&mut self) -> bool {
        if is_js_white_space_or_line_terminator(self.ch) {
            self.advance();
            return true;
        }
        false
    }
    fn skip_parentheses(&mut self) -> bool {
        if self.ch != u32::from(b'(') {
            return false;
        }
        let mut balance: i64 = 0;
        loop {
            if self.ch == u32::from(b')') {
                balance -= 1;
            } else if self.ch == u32::from(b'(') {
                balance += 1;
            }
            self.advance();
            if !(balance > 0 && self.ch != 0) {
                break;
            }
        }
        true
    }
}

struct Tokenizer<'a> {
    reader: Reader<'a>,
    next: Token,
}

impl<'a> Tokenizer<'a> {
    fn new(buf: &'a [u16]) -> Self {
        let mut reader = Reader::new(buf);
        let next = Self::scan(&mut reader);
        Tokenizer { reader, next }
    }
    fn next(&mut self) -> Token {
        let result = self.next;
        self.next = Self::scan(&mut self.reader);
        result
    }
    fn peek(&self) -> Token {
        self.next
    }
    fn skip_symbol(&mut self, c: u8) -> bool {
        if self.next.is_symbol(c) {
            self.next = Self::scan(&mut self.reader);
            return true;
        }
        false
    }
    fn scan(r: &mut Reader<'_>) -> Token {
        let start = r.index;
        if r.ch == 0 {
            return Token::EndOfInput;
        }
        if r.is_digit() {
            let value = r.read_numeral();
            return Token::Number {
                value,
                len: r.index - start,
            };
        }
        for c in [b':', b'-', b'+', b'.', b')'] {
            if r.skip(c) {
                return Token::Symbol(c);
            }
        }
        if r.is_word_char() {
            let (prefix, len) = r.read_word();
            let (kind, value) = lookup_keyword(prefix, len);
            return Token::Keyword { kind, value, len };
        }
        if r.skip_white_space() {
            return Token::WhiteSpace;
        }
        if r.skip_parentheses() {
            return Token::Unknown;
        }
        r.advance();
        Token::Unknown
    }
}

/// The first three significant digits of a fraction, as milliseconds.
fn read_milliseconds(token: Token) -> i32 {
    let (mut number, mut length) = match token {
        Token::Number { value, len } => (value, len),
        _ => return 0,
    };
    if length == 1 {
        number *= 100;
    } else if length == 2 {
        number *= 10;
    } else if length > 3 {
        length = length.min(MAX_SIGNIFICANT_DIGITS);
        let mut factor = 1;
        while length > 3 {
            factor *= 10;
            length -= 1;
        }
        number /= factor;
    }
    number
}

#[derive(Default)]
struct DayComposer {
    comp: [i32; 3],
    index: usize,
    named_month: Option<i32>,
    is_iso_date: bool,
}

impl DayComposer {
    fn is_empty(&self) -> bool {
        self.index == 0
    }
    fn add(&mut self, n: i32) -> bool {
        match self.comp.get_mut(self.index) {
            Some(slot) => {
                *slot = n;
                self.index += 1;
                true
            }
            None => false,
        }
    }
    /// (year, month 1-12, day)
    fn write(mut self) -> Option<(i32, i32, i32)> {
        if self.index < 1 {
            return None;
        }
        while self.add(1) {}
        let [c0, c1, c2] = self.comp;
        let (mut year, month, day) = match self.named_month {
            None if self.is_iso_date || !is_day(c0) => (c0, c1, c2),
            None => (c2, c0, c1),
            Some(month) if !is_day(c0) => (c0, month, c1),
            Some(month) => (c1, month, c0),
        };
        if !self.is_iso_date {
            if between(year, 0, 49) {
                year += 2000;
            } else if between(year, 50, 99) {
                year += 1900;
            }
        }
        (is_month(month) && is_day(day)).then_some((year, month, day))
    }
}

struct TimeComposer {
    comp: [i32; 4],
    index: usize,
    hour_offset: Option<i32>,
}

impl TimeComposer {
    fn new() -> Self {
        TimeComposer {
            comp: [0; 4],
            index: 0,
            hour_offset: None,
        }
    }
    fn is_empty(&self) -> bool {
        self.index == 0
    }
    fn is_expecting(&self, n: i32) -> bool {
        (self.index == 1 && is_minute(n)) || (self.index == 2 && is_second(n)) || (self.index == 3 && is_millisecond(n))
    }
    fn add(&mut self, n: i32) -> bool {
        match self.comp.get_mut(self.index) {
            Some(slot) => {
                *slot = n;
                self.index += 1;
                true
            }
            None => false,
        }
    }
    fn add_final(&mut self, n: i32) -> bool {
        if !self.add(n) {
            return false;
        }
        while self.add(0) {}
        true
    }
    /// (hour, minute, second, millisecond)
    fn write(self) -> Option<[i32; 4]> {
        let [mut hour, minute, second, ms] = self.comp;
        if let Some(offset) = self.hour_offset {
            if !is_hour12(hour) {
                return None;
            }
            hour = hour % 12 + offset;
        }
        let in_range = is_hour(hour) && is_minute(minute) && is_second(second) && is_millisecond(ms);
        let midnight_24 = hour == 24 && minute == 0 && second == 0 && ms == 0;
        (in_range || midnight_24).then_some([hour, minute, second, ms])
    }
}

struct TimeZoneComposer {
    sign: i32,
    hour: i32,
    minute: i32,
}

impl TimeZoneComposer {
    fn new() -> Self {
        TimeZoneComposer {
            sign: NONE,
            hour: NONE,
            minute: NONE,
        }
    }
    fn set(&mut self, offset_in_hours: i32) {
        self.sign = if offset_in_hours < 0 { -1 } else { 1 };
        self.hour = offset_in_hours * self.sign;
        self.minute = 0;
    }
    fn set_sign(&mut self, sign: i32) {
        self.sign = if sign < 0 { -1 } else { 1 };
    }
    fn is_expecting(&self, n: i32) -> bool {
        self.hour != NONE && self.minute == NONE && is_minute(n)
    }
    fn is_utc(&self) -> bool {
        self.hour == 0 && self.minute == 0
    }
    fn is_empty(&self) -> bool {
        self.hour == NONE
    }
    /// `Ok(None)`: no zone given (local time); `Ok(Some(seconds))`: the offset.
    fn write(self) -> Result<Option<i64>, ()> {
        if self.sign == NONE {
            return Ok(None);
        }
        let hour = if self.hour == NONE { 0 } else { self.hour };
        let minute = if self.minute == NONE { 0 } else { self.minute };
        // V8 computes this in unsigned 32-bit arithmetic (wrapping).
        let total = (hour as u32)
            .wrapping_mul(3600)
            .wrapping_add((minute as u32).wrapping_mul(60));
        if total > SMI_MAX {
            return Err(());
        }
        let total = i64::from(total);
        Ok(Some(if self.sign < 0 { -total } else { total }))
    }
}

/// `new Date(s).getTime()` in a UTC process, `None` for an invalid date.
pub(super) fn v8_parse_date(s: &str) -> Option<i64> {
    let units: Vec<u16> = s.encode_utf16().collect();
    let (year, month, day, [hour, minute, second, ms], offset) = v8_parse_fields(&units)?;
    let days = make_day(i64::from(year), i64::from(month) - 1, i64::from(day))?;
    let time = make_time(i64::from(hour), i64::from(minute), i64::from(second), i64::from(ms));
    let mut date = (days * MS_PER_DAY + time) as f64;
    match offset {
        None => {
            if date.abs() > MAX_TIME_BEFORE_UTC_MS {
                return None;
            }
        }
        Some(seconds) => {
            date -= seconds as f64 * 1000.0;
            if date.abs() > MAX_TIME_MS {
                return None;
            }
        }
    }
    time_clip(date)
}

type V8Fields = (i32, i32, i32, [i32; 4], Option<i64>);

/// V8 `DateParser::Parse`: the ES5 ISO form first, then the legacy parser on
/// whatever is left.
fn v8_parse_fields(units: &[u16]) -> Option<V8Fields> {
    let mut scanner = Tokenizer::new(units);
    let mut day = DayComposer::default();
    let mut time = TimeComposer::new();
    let mut tz = TimeZoneComposer::new();

    let first = parse_es5_date_time(&mut scanner, &mut day, &mut time, &mut tz);
    if first == Token::Invalid {
        return None;
    }
    let mut has_read_number = !day.is_empty();
    let mut token = first;
    while token != Token::EndOfInput {
        match token {
            Token::Number { value: n, .. } => {
                has_read_number = true;
                if scanner.skip_symbol(b':') {
                    if scanner.skip_symbol(b':') {
                        // n + "::"
                        if !time.is_empty() {
                            return None;
                        }
                        time.add(n);
                        time.add(0);
                    } else {
                        // n + ":"
                        if !time.add(n) {
                            return None;
                        }
                        if scanner.peek().is_symbol(b'.') {
                            scanner.next();
                        }
                    }
                } else if scanner.skip_symbol(b'.') && time.is_expecting(n) {
                    time.add(n);
                    if !scanner.peek().is_number() {
                        return None;
                    }
                    let fraction = read_milliseconds(scanner.next());
                    if fraction < 0 {
                        return None;
                    }
                    time.add_final(fraction);
                } else if tz.is_expecting(n) {
                    tz.minute = n;
                } else if time.is_expecting(n) {
                    time.add_final(n);
                    // Require end, white space, "Z", "+" or "-" right after the time.
                    let peek = scanner.peek();
                    if peek != Token::EndOfInput
                        && peek != Token::WhiteSpace
                        && !peek.is_keyword_z()
                        && peek.ascii_sign().is_none()
                    {
                        return None;
                    }
                } else {
                    if !day.add(n) {
                        return None;
                    }
                    scanner.skip_symbol(b'-');
                }
            }
            Token::Keyword { kind, value, .. } => {
                if kind == KeywordKind::AmPm && !time.is_empty() {
                    time.hour_offset = Some(value);
                } else if kind == KeywordKind::MonthName {
                    day.named_month = Some(value);
                    scanner.skip_symbol(b'-');
                } else if kind == KeywordKind::TimeZoneName && has_read_number {
                    tz.set(value);
                } else {
                    // Garbage words are illegal once a number has been read, and
                    // must be separated from the first number.
                    if has_read_number || scanner.peek().is_number() {
                        return None;
                    }
                }
            }
            _ if token.ascii_sign().is_some() && (tz.is_utc() || !time.is_empty()) => {
                // A UTC offset, only after UTC or a time.
                tz.set_sign(token.ascii_sign().unwrap_or(1));
                let (mut n, mut length) = (0, 0);
                if let Token::Number { value, len } = scanner.peek() {
                    scanner.next();
                    n = value;
                    length = len;
                }
                has_read_number = true;
                if scanner.peek().is_symbol(b':') {
                    tz.hour = n;
                    tz.minute = NONE;
                } else if length == 1 || length == 2 {
                    tz.hour = n;
                    tz.minute = 0;
                } else if length == 3 || length == 4 {
                    tz.hour = n / 100;
                    tz.minute = n % 100;
                } else {
                    return None;
                }
            }
            _ if (token.ascii_sign().is_some() || token.is_symbol(b')')) && has_read_number => {
                return None;
            }
            _ => {
                // Other characters and white space are ignored.
            }
        }
        token = scanner.next();
    }

    let (year, month, day) = day.write()?;
    let hms = time.write()?;
    let offset = tz.write().ok()?;
    Some((year, month, day, hms, offset))
}

/// V8 `ParseES5DateTime`: returns the next token for the legacy parser,
/// `EndOfInput` when the whole string was an ES5 date-time, or `Invalid`.
fn parse_es5_date_time(
    scanner: &mut Tokenizer<'_>,
    day: &mut DayComposer,
    time: &mut TimeComposer,
    tz: &mut TimeZoneComposer,
) -> Token {
    // Mandatory date: [('-'|'+')yy]yyyy[-MM[-DD]]
    if let Some(sign) = scanner.peek().ascii_sign() {
        let sign_token = scanner.next();
        if !scanner.peek().is_fixed_length_number(6) {
            return sign_token;
        }
        let year = scanner.next().number();
        if sign < 0 && year == 0 {
            return sign_token;
        }
        day.add(sign * year);
    } else if scanner.peek().is_fixed_length_number(4) {
        day.add(scanner.next().number());
    } else {
        return scanner.next();
    }
    if scanner.skip_symbol(b'-') {
        if !scanner.peek().is_fixed_length_number(2) || !is_month(scanner.peek().number()) {
            return scanner.next();
        }
        day.add(scanner.next().number());
        if scanner.skip_symbol(b'-') {
            if !scanner.peek().is_fixed_length_number(2) || !is_day(scanner.peek().number()) {
                return scanner.next();
            }
            day.add(scanner.next().number());
        }
    }
    // Optional time: 'T'HH':'mm[':'ss['.'sss]][Z|(+|-)hh[:]mm]
    if !scanner.peek().is_keyword_kind(KeywordKind::TimeSeparator) {
        if scanner.peek() != Token::EndOfInput {
            return scanner.next();
        }
    } else {
        scanner.next();
        if !scanner.peek().is_fixed_length_number(2) || !between(scanner.peek().number(), 0, 24) {
            return Token::Invalid;
        }
        // 24:00[:00[.000]] is allowed, no other time starting with 24.
        let hour_is_24 = scanner.peek().number() == 24;
        time.add(scanner.next().number());
        if !scanner.skip_symbol(b':') {
            return Token::Invalid;
        }
        if !scanner.peek().is_fixed_length_number(2)
            || !is_minute(scanner.peek().number())
            || (hour_is_24 && scanner.peek().number() > 0)
        {
            return Token::Invalid;
        }
        time.add(scanner.next().number());
        if scanner.skip_symbol(b':') {
            if !scanner.peek().is_fixed_length_number(2)
                || !is_second(scanner.peek().number())
                || (hour_is_24 && scanner.peek().number() > 0)
            {
                return Token::Invalid;
            }
            time.add(scanner.next().number());
            if scanner.skip_symbol(b'.') {
                if !scanner.peek().is_number() || (hour_is_24 && scanner.peek().number() > 0) {
                    return Token::Invalid;
                }
                time.add(read_milliseconds(scanner.next()));
            }
        }
        if scanner.peek().is_keyword_z() {
            scanner.next();
            tz.set(0);
        } else if let Some(sign) = scanner.peek().ascii_sign() {
            scanner.next();
            tz.set_sign(sign);
            if scanner.peek().is_fixed_length_number(4) {
                // hhmm extension.
                let hourmin = scanner.next().number();
                let (hour, minute) = (hourmin / 100, hourmin % 100);
                if !is_hour(hour) || !is_minute(minute) {
                    return Token::Invalid;
                }
                tz.hour = hour;
                tz.minute = minute;
            } else {
                if !scanner.peek().is_fixed_length_number(2) || !is_hour(scanner.peek().number()) {
                    return Token::Invalid;
                }
                tz.hour = scanner.next().number();
                if !scanner.skip_symbol(b':') {
                    return Token::Invalid;
                }
                if !scanner.peek().is_fixed_length_number(2) || !is_minute(scanner.peek().number()) {
                    return Token::Invalid;
                }
                tz.minute = scanner.next().number();
            }
        }
        if scanner.peek() != Token::EndOfInput {
            return Token::Invalid;
        }
    }
    // A complete ES5 string. Date-only forms without a zone are UTC.
    if tz.is_empty() && time.is_empty() {
        tz.set(0);
    }
    day.is_iso_date = true;
    Token::EndOfInput
}
