//! Time values: the reference's "date-like" check and its conversion of a `time`
//! field to epoch milliseconds.
//!
//! Pure and total: no clock, no I/O, no panics on any input. "Now" is never read
//! here: where the reference would send the current time, these functions return
//! `None` and the caller substitutes its own clock (the `now_ms` of a case).
//!
//! The reference (actions-core on Node.js, run with the process time zone set to
//! UTC) decides with two small pieces of JavaScript that this module reproduces:
//!
//! * **Validation** of a `datetime` field string (the ajv format `date-like`):
//!   when the string is the canonical text of a number (`String(Number(s)) === s`,
//!   e.g. `"1629213675"`, `"-5"`, `"1.5"`, `"1e+21"`, `"NaN"`), it is read as epoch
//!   *seconds* and is valid when `seconds * 1000` is a valid JavaScript time
//!   (finite, at most 8.64e15 in magnitude). Any other string is valid when dayjs
//!   can parse it (below).
//! * **Conversion** (`dayjs.utc(time).valueOf()`, or the current time when the
//!   value is falsy — `""`, `0` — or unparseable). Numbers are epoch milliseconds
//!   as they are, truncated toward zero (`new Date(n)`). Strings go through dayjs:
//!   - a string that does not end in `z`/`Z` and matches dayjs's loose pattern
//!     `^(\d{4})[-/]?(\d{1,2})?[-/]?(\d{0,2})[Tt\s]*(\d{1,2})?:?(\d{1,2})?:?(\d{1,2})?[.:]?(\d+)?$`
//!     is read field by field as UTC with JavaScript's `Date.UTC` overflow rules
//!     (`"2021-02-30"` is 2021-03-02; month `0` is the previous December; a missing
//!     day is 1; milliseconds are the *first three digits as an integer*, so `.5`
//!     is 5 ms; years 0000-0099 mean 1900-1999). Pure digit strings match too:
//!     `"1629213675449"` is year 1629, month 21, day 36, 75:44:09.
//!   - anything else is handed to `new Date(string)`, i.e. V8's date parser: the
//!     ES5 ISO form (`2021-08-17T15:21:15.449+05:30`, also `+0530`, `Z`, hour 24
//!     only as `24:00`), and otherwise V8's legacy parser (RFC 2822
//!     `Tue, 17 Aug 2021 15:21:15 GMT`, `Aug 17 2021 15:21:15`, month names, AM/PM,
//!     `GMT+hhmm`, US zone names, two-digit years, ...). Local times are UTC here,
//!     as they were for the reference.
//!
//! The V8 port (`v8`) follows the structure of V8's `DateParser` (a tokenizer plus
//! day, time and zone "composers") over UTF-16 code units, because its quirks are
//! the behaviour: a NUL code unit ends the input, any code unit from `A` upwards
//! that is not white space belongs to a word (so `é` or U+2028 make a word), only
//! the first three letters of a word are looked at, numerals keep their first nine
//! significant digits, and `GMT+hh:` offsets wrap in 32-bit arithmetic. It was
//! checked against Node.js 20 (V8 11.3) and dayjs 1.11 on several hundred
//! thousand generated strings.

use regex::Regex;
use std::sync::LazyLock;

mod v8;
use v8::v8_parse_date;

/// The largest magnitude of a valid JavaScript time value (ms), ECMA-262 TimeClip.
const MAX_TIME_MS: f64 = 8.64e15;
/// V8 allows local times ten days beyond the range before converting to UTC.
const MAX_TIME_BEFORE_UTC_MS: f64 = 8.64e15 + 864_000_000.0;
const MS_PER_DAY: i64 = 86_400_000;

/// JavaScript's `\s` (WhiteSpace and LineTerminator), as a regex class body.
const JS_WHITESPACE_CLASS: &str =
    r"\t\n\x0B\x0C\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// dayjs's `REGEX_PARSE` with JavaScript's ASCII `\d` and `\s` spelled out.
/// The regex crate's leftmost-first semantics give the same captures as
/// JavaScript's backtracking engine for this pattern.
static DAYJS_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    let pattern = format!(
        "^([0-9]{{4}})[-/]?([0-9]{{1,2}})?[-/]?([0-9]{{0,2}})[Tt{JS_WHITESPACE_CLASS}]*\
         ([0-9]{{1,2}})?:?([0-9]{{1,2}})?:?([0-9]{{1,2}})?[.:]?([0-9]+)?$"
    );
    // The pattern is a constant, not input: failing to compile it is a programming
    // error that the unit tests catch, never a reaction to user data.
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("the dayjs pattern is a valid constant regex")
});

/// The reference's "date-like" check for a string (ajv format used by datetime fields).
pub fn is_date_like(s: &str) -> bool {
    if let Some(seconds) = canonical_js_number(s) {
        // `dayjs.unix(n)` is `new Date(n * 1000)`.
        return time_clip(seconds * 1000.0).is_some();
    }
    dayjs_parse(s).is_some()
}

/// The epoch-millisecond value the reference sends for a `time` string that passed
/// validation: `dayjs.utc(s).valueOf()`. `None` when the reference would send the
/// current time instead: the string is empty (falsy) or cannot be parsed.
pub fn to_epoch_ms_str(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    dayjs_parse(s)
}

/// The epoch-millisecond value the reference sends for a numeric `time`: the
/// number itself, truncated toward zero (`new Date(n)`). `None` when the reference
/// would send the current time instead: `0` and NaN (falsy), infinities and
/// magnitudes above 8.64e15 (invalid dates).
pub fn to_epoch_ms_number(n: f64) -> Option<i64> {
    if n == 0.0 || n.is_nan() {
        return None;
    }
    time_clip(n)
}

/// ECMA-262 TimeClip, as whole milliseconds.
fn time_clip(ms: f64) -> Option<i64> {
    if !ms.is_finite() || ms.abs() > MAX_TIME_MS {
        return None;
    }
    // In range by the check above, so the cast is exact after truncation.
    Some(ms.trunc() as i64)
}

/// Timestamps up to this long are remembered by [`dayjs_parse`].
const REMEMBERED_LEN: usize = 64;

thread_local! {
    /// The last timestamp parsed on this thread and its value: an event's
    /// `time` is read twice (validated, then converted), and a purchase's
    /// products share it.
    static LAST_PARSED: std::cell::RefCell<(String, Option<i64>)> =
        const { std::cell::RefCell::new((String::new(), None)) };
}

/// `dayjs(s)` / `dayjs.utc(s)` for a string (identical with the zone at UTC).
fn dayjs_parse(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > REMEMBERED_LEN {
        return dayjs_parse_text(s);
    }
    LAST_PARSED.with(|cell| {
        let Ok(mut last) = cell.try_borrow_mut() else {
            return dayjs_parse_text(s);
        };
        if last.0 != s {
            let value = dayjs_parse_text(s);
            last.0.clear();
            last.0.push_str(s);
            last.1 = value;
        }
        last.1
    })
}

fn dayjs_parse_text(s: &str) -> Option<i64> {
    if let Some(ms) = iso_utc(s) {
        return Some(ms);
    }
    if !s.ends_with(['z', 'Z']) {
        if let Some(caps) = DAYJS_PATTERN.captures(s) {
            let field = |i: usize| caps.get(i).map(|m| m.as_str());
            return dayjs_fields(
                field(1).unwrap_or(""),
                field(2),
                field(3).unwrap_or(""),
                [field(4), field(5), field(6)],
                field(7),
            );
        }
    }
    v8_parse_date(s)
}

/// The common case, read directly: `YYYY-MM-DDTHH:MM:SSZ` or
/// `YYYY-MM-DDTHH:MM:SS.sssZ` (what Segment's libraries send) naming a real
/// date and time of the years 1000 to 9999, which V8's parser reads as that
/// UTC time. `None` for anything else (the full parser decides).
fn iso_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let ms_digits = match b.len() {
        20 => None,
        24 if b.get(19) == Some(&b'.') => Some(20..23),
        _ => return None,
    };
    let shape_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':')
        && b.last() == Some(&b'Z');
    if !shape_ok {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits
            .iter()
            .try_fold(0i64, |n, d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match ms_digits {
        Some(range) => num(range)?,
        None => 0,
    };
    let real = (1000..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !real {
        return None;
    }
    let days = days_from_civil(year, month) + day - 1;
    Some(days * MS_PER_DAY + make_time(hour, minute, second, ms))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `Date.UTC(year, month - 1 || 0, day || 1, h || 0, m || 0, s || 0, ms.slice(0, 3))`.
fn dayjs_fields(
    year: &str,
    month: Option<&str>,
    day: &str,
    hms: [Option<&str>; 3],
    fraction: Option<&str>,
) -> Option<i64> {
    let number = |digits: &str| digits.parse::<i64>().ok();
    let mut year = number(year)?;
    // `Date.UTC` maps years 0..=99 to 1900..=1999.
    if (0..=99).contains(&year) {
        year += 1900;
    }
    let month0 = match month {
        Some(m) => number(m)? - 1,
        None => 0,
    };
    let day = if day.is_empty() { 1 } else { number(day)? };
    let [h, mi, sec] = hms.map(|part| part.map_or(Some(0), number));
    let ms = match fraction {
        Some(f) => number(f.get(..3).unwrap_or(f))?,
        None => 0,
    };
    let days = make_day(year, month0, day)?;
    let time = make_time(h?, mi?, sec?, ms);
    time_clip((days * MS_PER_DAY + time) as f64)
}

/// ECMA-262 MakeDay with V8's accepted ranges, as days since the epoch.
fn make_day(year: i64, month0: i64, day: i64) -> Option<i64> {
    const MAX_YEAR: i64 = 1_000_000;
    const MAX_MONTH: i64 = 10_000_000;
    if !(-MAX_YEAR..=MAX_YEAR).contains(&year) || !(-MAX_MONTH..=MAX_MONTH).contains(&month0) {
        return None;
    }
    let y = year + month0.div_euclid(12);
    let m = month0.rem_euclid(12) + 1;
    Some(days_from_civil(y, m) + day - 1)
}

/// Days from 1970-01-01 to the first day of month `m` (1-12) of proleptic
/// Gregorian year `y`.
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn make_time(hour: i64, minute: i64, second: i64, ms: i64) -> i64 {
    hour * 3_600_000 + minute * 60_000 + second * 1000 + ms
}

// ---------------------------------------------------------------------------
// `String(Number(s)) === s`
// ---------------------------------------------------------------------------

/// The number `s` denotes when `s` is exactly JavaScript's `String(Number(s))`.
fn canonical_js_number(s: &str) -> Option<f64> {
    // Every canonical number text is made of these characters, or is one of
    // "NaN", "Infinity", "-Infinity".
    match s {
        "NaN" => return Some(f64::NAN),
        "Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b"-+.e".contains(&b)) {
        return None;
    }
    // Rust's parser is correctly rounded like JavaScript's; the text comparison
    // below rejects every spelling JavaScript would not produce.
    let value: f64 = s.parse().ok()?;
    (js_number_to_string(value) == s).then_some(value)
}

/// ECMA-262 Number::toString (radix 10).
fn js_number_to_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if v < 0.0 {
        return format!("-{}", js_number_to_string(-v));
    }
    let (digits, n) = shortest_digits(v);
    let k = digits.len() as i64;
    if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at_checked(n as usize).unwrap_or((&digits, ""));
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let (first, rest) = digits.split_at_checked(1).unwrap_or((&digits, ""));
        let sign = if n > 0 { '+' } else { '-' };
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{sign}{}", (n - 1).abs())
    }
}

/// The shortest decimal digits that round-trip to `v` (finite, positive), closest
/// to `v` with ties to even as JavaScript requires, and the exponent `n` such that
/// `v = 0.d1d2... * 10^n`. serde_json's float formatter makes that choice (Rust's
/// own `{:e}` does not always pick the closest); only its layout is re-read here.
fn shortest_digits(v: f64) -> (String, i64) {
    let text = serde_json::Value::from(v).to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let trimmed = all.trim_start_matches('0');
    let leading_zeros = (all.len() - trimmed.len()) as i64;
    let digits = trimmed.trim_end_matches('0').to_owned();
    (digits, exponent + int.len() as i64 - leading_zeros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_remembered_timestamp_gives_what_a_fresh_parse_gives() {
        let texts = [
            "2019-06-19T03:33:22.736Z",
            "not a date",
            "2019-06-19T03:33:22.736Z",
            "2021",
            "2021",
            "not a date",
            "",
        ];
        for text in texts.iter().chain(texts.iter().rev()) {
            assert_eq!(dayjs_parse(text), dayjs_parse_text(text), "{text}");
        }
        let long = format!("{}Z", "9".repeat(REMEMBERED_LEN + 1));
        assert_eq!(dayjs_parse(&long), dayjs_parse_text(&long));
    }

    /// `(timestamp, expected properties.time)` pairs of the published conformance
    /// vectors that use the default `time` mapping (`$.timestamp`).
    const CONFORMANCE_VALID: &[(&str, i64)] = &[
        ("1629213675", -10_705_035_600_000),
        ("1629213675449", -10_705_032_951_000),
        ("1970-01-01T00:00:00.000Z", 0),
        ("2019-06-19T03:33:22.736Z", 1_560_915_202_736),
        ("2019-11-26T22:23:41.183Z", 1_574_807_021_183),
        ("2020-03-13T16:36:39.007Z", 1_584_117_399_007),
        ("2020-03-22T17:10:46.828Z", 1_584_897_046_828),
        ("2020-04-08T12:37:31.354Z", 1_586_349_451_354),
        ("2020-10-10T05:20:45.369Z", 1_602_307_245_369),
        ("2021", 1_609_459_200_000),
        ("2021-02-30T00:00:00Z", 1_614_643_200_000),
        ("2021-04-10T10:54:36.512Z", 1_618_052_076_512),
        ("2021-07-19T05:52:29.953Z", 1_626_673_949_953),
        ("2021-08", 1_627_776_000_000),
        ("2021-08-17 15:21:15", 1_629_213_675_000),
        ("2021-08-17T15:21:15", 1_629_213_675_000),
        ("2021-08-17T15:21:15-08:00", 1_629_242_475_000),
        ("2021-08-17T15:21:15.123456Z", 1_629_213_675_123),
        ("2021-08-17T15:21:15.449+0530", 1_629_193_875_449),
        ("2021-08-17T15:21:15.449+05:30", 1_629_193_875_449),
        ("2021-08-17T15:21:15.449Z", 1_629_213_675_449),
        ("2021-08-17T15:21:15Z", 1_629_213_675_000),
        ("2021-12-11T22:02:29.465Z", 1_639_260_149_465),
        ("2022-02-15T04:49:33.122Z", 1_644_900_573_122),
        ("2022-03-19T04:48:14.283Z", 1_647_665_294_283),
        ("2022-11-01T17:32:17.690Z", 1_667_323_937_690),
        ("2023-03-02T19:19:57.540Z", 1_677_784_797_540),
        ("2023-04-11T02:15:07.434Z", 1_681_179_307_434),
        ("2023-05-14T00:53:14.168Z", 1_684_025_594_168),
        ("2023-08-22T07:31:36.636Z", 1_692_689_496_636),
        ("2023-10-10T09:18:07.329Z", 1_696_929_487_329),
        ("2023-11-15T11:47:23.133Z", 1_700_048_843_133),
        ("2023-12-21T11:12:11.359Z", 1_703_157_131_359),
        ("2024-02-09T22:04:34.081Z", 1_707_516_274_081),
        ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
        ("2024-06-11T04:12:35.908Z", 1_718_079_155_908),
        ("2025-03-22T06:03:09.422Z", 1_742_623_389_422),
        ("2099-12-31T23:59:59Z", 4_102_444_799_000),
        ("Aug 17 2021 15:21:15", 1_629_213_675_000),
        ("Tue, 17 Aug 2021 15:21:15 GMT", 1_629_213_675_000),
    ];

    /// Timestamps the conformance vectors reject with "Timestamp must be a valid
    /// date-like string but it was not." (`""` only in batch mode: in single-event
    /// mode it is removed before validation and the time is "now").
    const CONFORMANCE_INVALID: &[&str] = &[
        "   ",
        "",
        "0000-00-00T00:00:00Z",
        "1e3",
        "2021-08-17T25:00:00Z",
        "2021-13-45T99:99:99Z",
        "20210817T152115Z",
        "NaN",
        "not a date",
        "yesterday",
    ];

    /// Numeric timestamps of the conformance vectors; `None` = "now".
    const CONFORMANCE_NUMBERS: &[(f64, Option<i64>)] = &[
        (-1.0, Some(-1)),
        (0.0, None),
        (1_629_213_675.0, Some(1_629_213_675)),
        (1_629_213_675_449.0, Some(1_629_213_675_449)),
        (1_629_213_675_449.5, Some(1_629_213_675_449)),
    ];

    /// `(string, date-like?, value sent)`: the reference's algorithm (dayjs 1.11
    /// with the utc plugin on Node.js 20, TZ=UTC) run on each string.
    const GENERAL_RULES: &[(&str, bool, Option<i64>)] = &[
        // dayjs's loose pattern: UTC fields with overflow, ms = first 3 digits.
        ("2021-02-30", true, Some(1_614_643_200_000)),
        ("2021-02-29T12:00:00", true, Some(1_614_600_000_000)),
        ("2021-08", true, Some(1_627_776_000_000)),
        ("2021", true, Some(1_609_459_200_000)),
        ("2021-8-7", true, Some(1_628_294_400_000)),
        ("2021/08/17", true, Some(1_629_158_400_000)),
        ("2021/08/17 15:21", true, Some(1_629_213_660_000)),
        ("2021-08-17t15:21:15", true, Some(1_629_213_675_000)),
        ("2021-08-17   15:21:15", true, Some(1_629_213_675_000)),
        ("2021-08-17T15:21:15.5", true, Some(1_629_213_675_005)),
        ("2021-08-17T15:21:15.05", true, Some(1_629_213_675_005)),
        ("2021-08-17T15:21:15.123456", true, Some(1_629_213_675_123)),
        ("2021-08-17T15:21:15:449", true, Some(1_629_213_675_449)),
        ("2021-00-10", true, Some(1_607_558_400_000)),
        ("2021-08-00", true, Some(1_627_689_600_000)),
        ("2021-12-31T24:00:00", true, Some(1_640_995_200_000)),
        ("0050-06-15", true, Some(-616_896_000_000)),
        ("0100-01-01", true, Some(-59_011_459_200_000)),
        ("20210817", true, Some(1_629_158_400_000)),
        ("2021081715", true, Some(1_629_212_400_000)),
        ("202108171521", true, Some(1_629_213_660_000)),
        // A canonical number string is validated as epoch seconds (out of range
        // here) but converted through the pattern.
        ("20210817152115", false, Some(1_629_213_675_000)),
        ("12345", true, Some(-23_215_507_200_000)),
        ("9999-99-99T99:99:99", true, Some(253_637_152_839_000)),
        // Ending in Z: V8's ES5 ISO parser.
        ("2021-08-17Z", true, Some(1_629_158_400_000)),
        ("2021-08-17T15:21Z", true, Some(1_629_213_660_000)),
        ("2021-08-17T15:21:15.5Z", true, Some(1_629_213_675_500)),
        ("2021-08-17T24:00:00Z", true, Some(1_629_244_800_000)),
        ("2021-08-17T24:00:01Z", false, None),
        ("2021-08-17T15:21:15+05", false, None),
        ("2021-08-17T15:21:15+2400", false, None),
        ("2021-08-17T15:21:15.449-0800", true, Some(1_629_242_475_449)),
        ("2021-08-17T25:00:00Z", false, None),
        ("2021-08-17T15:60:00Z", false, None),
        ("2021-13-01T00:00:00Z", false, None),
        ("2021-12-32T00:00:00Z", false, None),
        ("+002021-08-17T00:00:00Z", true, Some(1_629_158_400_000)),
        ("-000001-01-01T00:00:00Z", true, Some(-62_198_755_200_000)),
        ("-000000-01-01T00:00:00Z", false, None),
        ("+275760-09-13T00:00:00.000Z", true, Some(8_640_000_000_000_000)),
        ("+275760-09-13T00:00:00.001Z", false, None),
        // V8's legacy parser: RFC 2822, month names, AM/PM, zones.
        ("Tue, 17 Aug 2021 15:21:15 +0530", true, Some(1_629_193_875_000)),
        ("Tue, 17 Aug 2021 15:21:15 PST", true, Some(1_629_242_475_000)),
        ("Tue, 17 Aug 2021 15:21:15 EDT", true, Some(1_629_228_075_000)),
        (
            "Tue Aug 17 2021 15:21:15 GMT+0000 (Coordinated Universal Time)",
            true,
            Some(1_629_213_675_000),
        ),
        ("Tuesday, August 17, 2021 3:21:15 PM", true, Some(1_629_213_675_000)),
        ("August 17, 2021", true, Some(1_629_158_400_000)),
        ("17 August 2021", true, Some(1_629_158_400_000)),
        ("Aug 17", true, Some(998_006_400_000)),
        ("Aug-17-2021", true, Some(1_629_158_400_000)),
        ("17-Aug-2021 10:00 UTC", true, Some(1_629_194_400_000)),
        ("8/17/2021", true, Some(1_629_158_400_000)),
        ("8/17/21 3:21 pm", true, Some(1_629_213_660_000)),
        ("12/31/1999 23:59:59 GMT-8", true, Some(946_713_599_000)),
        ("Aug 17 2021 12:00 AM", true, Some(1_629_158_400_000)),
        ("Aug 17 2021 13:00 PM", false, None),
        ("Aug 17 2021 10:00 GMT+05:30", true, Some(1_629_174_600_000)),
        ("Aug 17 2021 10::", true, Some(1_629_194_400_000)),
        ("Aug 17 2021 (comment) 10:00", true, Some(1_629_194_400_000)),
        // Short numbers: valid as epoch seconds, converted by V8's legacy parser.
        ("0", true, Some(946_684_800_000)),
        ("1", true, Some(978_307_200_000)),
        ("12", true, Some(1_007_164_800_000)),
        ("13", true, None),
        ("32", true, Some(1_956_528_000_000)),
        ("123", true, Some(-58_285_699_200_000)),
        ("-5", true, Some(988_675_200_000)),
        ("1.5", true, Some(978_652_800_000)),
        ("-0", true, Some(946_684_800_000)),
        ("1e3", false, None),
        ("1e+21", false, None),
        ("NaN", false, None),
        ("Infinity", false, None),
        ("8640000000000", true, Some(210_482_064_000_000)),
        ("8640000000001", false, Some(210_482_064_001_000)),
        ("99999999999999", false, Some(253_637_152_839_000)),
        // Not dates.
        ("   ", false, None),
        ("", false, None),
        ("not a date", false, None),
        ("yesterday", false, None),
        ("20210817T152115Z", false, None),
        ("2021-13-45T99:99:99Z", false, None),
        ("T10:00", false, None),
        // V8 stops at a NUL code unit.
        ("2021-08-17T15:21:15\u{0}junk", true, Some(1_629_213_675_000)),
    ];

    #[test]
    fn conformance_valid_timestamps() {
        for &(s, ms) in CONFORMANCE_VALID {
            assert!(is_date_like(s), "{s:?} should be date-like");
            assert_eq!(to_epoch_ms_str(s), Some(ms), "{s:?}");
        }
    }

    #[test]
    fn conformance_invalid_timestamps() {
        for &s in CONFORMANCE_INVALID {
            assert!(!is_date_like(s), "{s:?} should not be date-like");
        }
        // `""` in single-event mode never reaches validation; the time is "now".
        assert_eq!(to_epoch_ms_str(""), None);
    }

    #[test]
    fn conformance_numbers() {
        for &(n, ms) in CONFORMANCE_NUMBERS {
            assert_eq!(to_epoch_ms_number(n), ms, "{n}");
        }
    }

    #[test]
    fn general_rules() {
        for &(s, like, ms) in GENERAL_RULES {
            assert_eq!(is_date_like(s), like, "is_date_like({s:?})");
            assert_eq!(to_epoch_ms_str(s), ms, "to_epoch_ms_str({s:?})");
        }
    }

    #[test]
    fn numbers_are_clipped_and_truncated() {
        assert_eq!(to_epoch_ms_number(-0.0), None);
        assert_eq!(to_epoch_ms_number(f64::NAN), None);
        assert_eq!(to_epoch_ms_number(f64::INFINITY), None);
        assert_eq!(to_epoch_ms_number(f64::NEG_INFINITY), None);
        assert_eq!(to_epoch_ms_number(0.5), Some(0));
        assert_eq!(to_epoch_ms_number(-0.5), Some(0));
        assert_eq!(to_epoch_ms_number(-1.9), Some(-1));
        assert_eq!(to_epoch_ms_number(8.64e15), Some(8_640_000_000_000_000));
        assert_eq!(to_epoch_ms_number(-8.64e15), Some(-8_640_000_000_000_000));
        assert_eq!(to_epoch_ms_number(8.64e15 + 2.0), None);
        assert_eq!(to_epoch_ms_number(1e300), None);
        assert_eq!(to_epoch_ms_number(5e-324), Some(0));
    }

    #[test]
    fn js_number_to_string_matches_javascript() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-5.0, "-5"),
            (1.5, "1.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123e18, "123000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (1e-6, "0.000001"),
            (0.000_001_5, "0.0000015"),
            (5e-324, "5e-324"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            // A tie between two shortest spellings: JavaScript takes the even one.
            (18_042_659_304_434.562, "18042659304434.562"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for &(v, text) in cases {
            assert_eq!(js_number_to_string(v), text, "{v:e}");
        }
    }

    #[test]
    fn canonical_number_strings() {
        assert_eq!(canonical_js_number("1629213675"), Some(1_629_213_675.0));
        assert_eq!(canonical_js_number("-5"), Some(-5.0));
        assert_eq!(canonical_js_number("1e+21"), Some(1e21));
        for s in ["-0", "+5", "01", "1.50", "1e21", "1E+21", ".5", "5.", " 5", "0x10", ""] {
            assert_eq!(canonical_js_number(s), None, "{s:?}");
        }
        // A tie spelled the odd way is not JavaScript's spelling.
        assert_eq!(canonical_js_number("18042659304434.563"), None);
        assert!(!is_date_like("18042659304434.562"));
        assert!(is_date_like("18042659304434.563"));
    }

    #[test]
    fn dayjs_pattern_compiles_and_captures_like_javascript() {
        let caps = DAYJS_PATTERN.captures("1629213675449");
        let groups: Vec<Option<&str>> = caps
            .map(|c| (1..=7).map(|i| c.get(i).map(|m| m.as_str())).collect())
            .unwrap_or_default();
        assert_eq!(
            groups,
            [
                Some("1629"),
                Some("21"),
                Some("36"),
                Some("75"),
                Some("44"),
                Some("9"),
                None
            ]
        );
    }

    #[test]
    fn legacy_zone_offsets_wrap_like_v8() {
        // hour * 3600 is computed in unsigned 32-bit arithmetic and must stay a Smi.
        assert_eq!(to_epoch_ms_str("Aug 17 2021 10:00 GMT+596523:"), Some(-518_288_400_000));
        assert_eq!(to_epoch_ms_str("Aug 17 2021 10:00 GMT+596524:"), None);
        assert_eq!(to_epoch_ms_str("Aug 17 2021 10:00 GMT+1193046:"), None);
        assert_eq!(
            to_epoch_ms_str("Aug 17 2021 10:00 GMT+1193047:"),
            Some(1_629_192_496_000)
        );
    }

    proptest! {
        #[test]
        fn strings_never_panic(s in any::<String>()) {
            let _ = is_date_like(&s);
            let _ = to_epoch_ms_str(&s);
        }

        #[test]
        fn date_like_strings_never_panic(
            s in "[0-9+\\-/:. TtZz()APMGU\u{a0}\u{2028}]{0,40}|[A-Za-z]{0,5} [0-9]{1,12} [0-9:]{0,12}"
        ) {
            let _ = is_date_like(&s);
            if let Some(ms) = to_epoch_ms_str(&s) {
                prop_assert!(ms.unsigned_abs() <= 8_640_000_000_000_000);
            }
        }

        /// The direct read of the common ISO form gives what V8's parser
        /// gives, and declines what is not a real date and time.
        #[test]
        fn iso_fast_path_agrees_with_the_parser(
            y in 0i64..=10_999, mo in 0i64..=13, d in 0i64..=32,
            h in 0i64..=25, mi in 0i64..=61, sec in 0i64..=61, ms in proptest::option::of(0i64..=999)
        ) {
            let text = match ms {
                Some(ms) => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}Z"),
                None => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z"),
            };
            let fast = iso_utc(&text);
            if let Some(value) = fast {
                prop_assert_eq!(Some(value), v8_parse_date(&text), "{}", text);
            }
            let real = (1000..=9999).contains(&y) && (1..=12).contains(&mo) && d >= 1
                && d <= days_in_month(y, mo) && h <= 23 && mi <= 59 && sec <= 59;
            prop_assert_eq!(fast.is_some(), real, "{}", text);
        }

        #[test]
        fn iso_fast_path_declines_other_shapes(s in "[0-9]{4}[-/][0-9]{2}[-/][0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,4})?[Zz]?") {
            if let Some(value) = iso_utc(&s) {
                prop_assert_eq!(Some(value), v8_parse_date(&s), "{}", s);
            }
        }

        #[test]
        fn numbers_never_panic(bits in any::<u64>()) {
            let n = f64::from_bits(bits);
            if let Some(ms) = to_epoch_ms_number(n) {
                prop_assert!(ms.unsigned_abs() <= 8_640_000_000_000_000);
                prop_assert_eq!(ms as f64, n.trunc());
            }
        }

        #[test]
        fn canonical_numbers_round_trip(v in any::<f64>()) {
            let text = js_number_to_string(v);
            if v.is_finite() && v != 0.0 {
                let parsed: f64 = text.parse().unwrap_or(f64::NAN);
                prop_assert_eq!(parsed, v);
                prop_assert_eq!(canonical_js_number(&text), Some(v));
            }
        }
    }
}
